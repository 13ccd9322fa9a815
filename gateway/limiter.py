"""One rate limit per API key for the whole deployment, held in Redis (each provider's
keys under that provider's ``ASKBOX_<PROVIDER>_REQUEST_LIMIT`` / ``_TOKEN_LIMIT``).

Library: ``limits`` (5.x, async API, its Redis storage used through redis.asyncio via
``implementation="redispy"``, so no second Redis client library). It was chosen over
pyrate-limiter because its Redis strategies are single Lua scripts (atomic across every
gateway process and host), it parses the "60/minute" strings the settings use, and it
reports window stats (when a slot frees) so a waiting request sleeps exactly as long as it
must. Its keys live under ``askbox:gateway:limits``.

- requests per minute and per day: the *moving* window (exact: never more than N in any
  window of that length; it stores one timestamp per request, at most N per key);
- tokens per minute: the *fixed* window. Tokens are only known after a response, so they
  are charged after the fact and must be recorded even when they overshoot; ``limits``'
  fixed-window ``hit`` always increments (the moving and sliding windows refuse an
  over-limit hit), and a moving window would store one list entry per token. A request is
  admitted only while the token window still has room.

Other processes (the service's own google-genai calls) use the same class with the same
settings and so share the same budget.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from redis.asyncio import Redis

from gateway.settings import GatewaySettings, ProviderName
from jobs import keys


class LimitTimeout(Exception):
    """The request waited ``waited`` seconds for its turn and gave up."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"waited {waited:.1f} s for the shared rate limit")
        self.waited = waited


class DailyLimitReached(Exception):
    """Our own requests-per-day limit is used up on this key until ``reset_at`` (epoch)."""

    def __init__(self, key_id: str, reset_at: float) -> None:
        super().__init__(f"daily request limit used up on {key_id}")
        self.key_id = key_id
        self.reset_at = reset_at


@dataclass(frozen=True)
class Admission:
    """The outcome of one try: admitted, or when to try again (epoch seconds)."""

    ok: bool
    retry_at: float = 0.0
    daily_reset_at: float | None = None  # set when the per-day limit is what refused


def _limit(text: str) -> RateLimitItem | None:
    return parse(text) if text.strip() else None


class SharedLimits:
    """Requests/minute, tokens/minute and requests/day per key, shared through Redis."""

    def __init__(self, redis: Redis, settings: GatewaySettings, provider: ProviderName = "gemini") -> None:
        # Reuse the caller's connection pool: one set of connections per process.
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=keys.GATEWAY_LIMITS_PREFIX,
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]  # limits types its options as scalars
        )
        self._moving = MovingWindowRateLimiter(storage)
        self._fixed = FixedWindowRateLimiter(storage)
        config = settings.provider(provider)
        self.requests = _limit(config.request_limit)
        self.tokens = _limit(config.token_limit)
        self.daily = _limit(config.daily_limit)

    async def try_acquire(self, key_id: str) -> Admission:
        """Take one request slot on ``key_id`` if every limit has room (never waits)."""
        if self.tokens is not None:
            stats = await self._fixed.get_window_stats(self.tokens, "tpm", key_id)
            if stats.remaining <= 0:
                return Admission(False, stats.reset_time)
        if self.daily is not None and not await self._moving.test(self.daily, "rpd", key_id):
            stats = await self._moving.get_window_stats(self.daily, "rpd", key_id)
            return Admission(False, stats.reset_time, daily_reset_at=stats.reset_time)
        if self.requests is not None and not await self._moving.hit(self.requests, "rpm", key_id):
            stats = await self._moving.get_window_stats(self.requests, "rpm", key_id)
            return Admission(False, stats.reset_time)
        # Taken last: a per-minute refusal above must not spend a (scarcer) daily slot.
        if self.daily is not None and not await self._moving.hit(self.daily, "rpd", key_id):
            stats = await self._moving.get_window_stats(self.daily, "rpd", key_id)
            return Admission(False, stats.reset_time, daily_reset_at=stats.reset_time)
        return Admission(True)

    async def acquire(self, key_id: str, wait: float) -> float:
        """Wait (at most ``wait`` s) for a slot on one key; returns the seconds waited."""
        start = time.monotonic()
        while True:
            admission = await self.try_acquire(key_id)
            if admission.ok:
                return time.monotonic() - start
            if admission.daily_reset_at is not None:
                raise DailyLimitReached(key_id, admission.daily_reset_at)
            await sleep_until(admission.retry_at, start, start + wait)

    async def charge(self, key_id: str, tokens: int) -> None:
        """Record the tokens a response used (after the fact; may overshoot the limit)."""
        if self.tokens is not None and tokens > 0:
            await self._fixed.hit(self.tokens, "tpm", key_id, cost=tokens)

    async def requests_remaining(self, key_id: str) -> int:
        """Requests left in the current per-minute window (for spreading load over keys)."""
        if self.requests is None:
            return 1 << 30
        return (await self._moving.get_window_stats(self.requests, "rpm", key_id)).remaining


async def sleep_until(retry_at: float, start: float, deadline: float) -> None:
    """Sleep until ``retry_at`` (epoch) plus a little jitter, or raise at ``deadline``
    (monotonic; ``start`` is when the wait began).

    Waiters on other processes wake at the same instant; the jitter spreads them so they
    do not all hit Redis (and lose) together. Sleeps are capped at 1 s so a slot freed
    early (a key's cooldown ending) is noticed.
    """
    delay = min(1.0, max(0.01, retry_at - time.time())) + random.uniform(0, 0.02)
    now = time.monotonic()
    if now + delay > deadline:
        raise LimitTimeout(now - start)
    await asyncio.sleep(delay)
