"""Reserving a request's spend before it goes upstream, atomically against every budget.

The rule: a metered request is admitted only while every budget it counts against (its
user's and channel's day, its question; gateway/budgets.py) has room left, that is
``used + reserved < limit`` in tokens and in USD; it then reserves its estimate on each
(the prompt's size plus the answer's cap, priced at its model's price). Settling the
response (gateway/metering.py) removes the reservation and adds what was really used
in one transaction. Settling never adds more than it removes (an estimate bounds what a
request can use), so used + reserved passes the limit only by the last admission: requests
running at once cross a budget by at most what that one reserved.

A request finding the room held by other requests in flight waits for them to settle (up
to ``ASKBOX_GATEWAY_MAX_WAIT``), then gets a 429 its client retries; one finding the
budget used up ends the session with the budget's message.

The check and the reservation are one Lua script (redis-py's ``register_script``: EVALSHA,
reloaded after a Redis restart), since gateways on several hosts reserve against the same
budgets and no library offers a reservation across several counters. Each reservation
carries an expiry: one left by a gateway that died before settling is charged in full
(like a stream cut off) and removed by the next request that looks at that budget.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.budgets import Budget, budgets_for
from gateway.meta import SessionMeta
from gateway.settings import GatewaySettings
from jobs import keys

# KEYS: per budget, its used hash then its reserved hash.
# ARGV: now, id, tokens, usd, expires_at, the reserved hash's ttl (ms); then per budget: the used
# hash's token field, USD field, its ttl (s), the token limit, the USD limit (0 = none).
_RESERVE = """
local now = tonumber(ARGV[1])
local n = #KEYS / 2
for i = 1, n do
  local used, reserved = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 6 + 5 * (i - 1)
  local tfield, ufield, used_ttl = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  local tlimit, ulimit = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local held_t, held_u = 0, 0
  local entries = redis.call('HGETALL', reserved)
  for j = 1, #entries, 2 do
    local t, u, expires = string.match(entries[j + 1], '^(%S+) (%S+) (%S+)$')
    if tonumber(expires) <= now then
      -- left by a gateway that never settled it: charged in full
      redis.call('HDEL', reserved, entries[j])
      redis.call('HINCRBY', used, tfield, t)
      redis.call('HINCRBYFLOAT', used, ufield, u)
      if redis.call('TTL', used) < 0 then redis.call('EXPIRE', used, used_ttl) end
    else
      held_t = held_t + tonumber(t)
      held_u = held_u + tonumber(u)
    end
  end
  local used_t = tonumber(redis.call('HGET', used, tfield) or '0')
  local used_u = tonumber(redis.call('HGET', used, ufield) or '0')
  if tlimit > 0 and used_t >= tlimit then return {i, 'tokens', tostring(used_t)} end
  if ulimit > 0 and used_u >= ulimit then return {i, 'cost_usd', tostring(used_u)} end
  if (tlimit > 0 and used_t + held_t >= tlimit) or (ulimit > 0 and used_u + held_u >= ulimit) then
    return {i, 'held', tostring(held_t)}
  end
end
for i = 1, n do
  local reserved = KEYS[2 * i]
  redis.call('HSET', reserved, ARGV[2], ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[5])
  if redis.call('PTTL', reserved) < tonumber(ARGV[6]) then redis.call('PEXPIRE', reserved, ARGV[6]) end
end
return 0
"""


@dataclass(frozen=True)
class Reservation:
    """A request's estimated spend, held against ``budgets`` (none: nothing to hold)."""

    id: str
    tokens: int
    usd: float
    date: str  # the UTC day whose budgets hold it; its settlement counts on that day
    budgets: tuple[Budget, ...]

    @property
    def held_in(self) -> list[str]:
        return [b.reserved_key(self.date) for b in self.budgets]


class BudgetUsedUp(Exception):
    """A budget has no room left at all: the session ends with this message."""


class BudgetHeld(Exception):
    """The room left is held by requests in flight, longer than a request may wait."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"waited {waited:.0f} s for requests in flight to settle")
        self.waited = waited


class Reservations:
    def __init__(self, redis: Redis, settings: GatewaySettings) -> None:
        self.settings = settings
        self._reserve = redis.register_script(_RESERVE)

    async def reserve(
        self,
        session_id: str,
        meta: SessionMeta,
        tokens: int,
        usd: float,
        stopped: Callable[[], bool],
        title: str = "Gemini",
    ) -> Reservation:
        """Hold ``tokens`` and ``usd`` against the session's budgets, waiting while requests in
        flight hold the room (raises BudgetUsedUp, BudgetHeld)."""
        settings = self.settings
        reservation = Reservation(
            secrets.token_hex(8), tokens, usd, keys.utc_date(), tuple(budgets_for(settings, meta, session_id))
        )
        if not reservation.budgets:
            return reservation
        # Longer than any request can last (the session's life, plus a stalled read and
        # the wait for a turn): a live request is settled long before its reservation expires.
        lifetime = meta.ttl + settings.gateway_read_timeout + settings.gateway_max_wait
        used_ttl = {"question": meta.ttl + 86400}
        keys_: list[str] = []
        args: list[str | int | float] = []
        for budget in reservation.budgets:
            keys_ += [budget.used_key(reservation.date), budget.reserved_key(reservation.date)]
            args += [*budget.fields, used_ttl.get(budget.scope, keys.DAILY_TTL), budget.tokens, f"{budget.usd:.9f}"]
        start = time.monotonic()
        while True:
            now = time.time()
            # The hash outlives its entries by a day, so one left behind is found and charged.
            outcome = await self._reserve(
                keys=keys_,
                args=[
                    f"{now:.3f}",
                    reservation.id,
                    tokens,
                    f"{usd:.9f}",
                    f"{now + lifetime:.3f}",
                    int((lifetime + keys.DAY) * 1000),
                    *args,
                ],
            )
            if outcome == 0:
                return reservation
            index, kind, used = int(outcome[0]), outcome[1].decode(), float(outcome[2])
            if kind != "held":
                raise BudgetUsedUp(reservation.budgets[index - 1].used_up(kind, used, title))
            waited = time.monotonic() - start
            if stopped() or waited + 0.5 > settings.gateway_max_wait:
                raise BudgetHeld(waited)
            await asyncio.sleep(random.uniform(0.1, 0.5))  # spread waiters on other gateways
