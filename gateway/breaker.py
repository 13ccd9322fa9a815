"""A circuit breaker whose state is in Redis, shared by every gateway (and later by the
service's own Gemini calls).

Hand-written: pybreaker's Redis storage uses the sync redis client (it would block the
event loop), aiobreaker keeps its state in the process, and purgatory's Redis unit of work
is async-only with its own key schema, which the service's sync callers could not share.
The state is one small hash that any Redis client can read:

- ``failures``: consecutive upstream failures (5xx, timeouts, connection errors);
- ``open_until``: epoch seconds; while in the future the circuit is open (fast 503s);
  once past, the circuit is half-open: one trial request (a ``trial`` key taken with
  SET NX) goes upstream, its success closes the circuit, its failure re-opens it.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from jobs import keys


class BreakerOpen(Exception):
    def __init__(self, retry_in: float) -> None:
        super().__init__(f"upstream circuit open, next trial in {retry_in:.1f} s")
        self.retry_in = retry_in


class RedisBreaker:
    def __init__(self, redis: Redis, name: str, threshold: int, cooldown: float) -> None:
        self.redis = redis
        self.key = keys.breaker(name)
        self.trial_key = keys.breaker_trial(name)
        self.threshold = threshold
        self.cooldown = cooldown

    async def state(self) -> str:
        open_until = await self.redis.hget(self.key, "open_until")
        if open_until is None:
            return "closed"
        return "open" if float(open_until) > time.time() else "half-open"

    async def check(self) -> None:
        """Raise BreakerOpen unless a request may go upstream now."""
        open_until = await self.redis.hget(self.key, "open_until")
        if open_until is None:
            return
        retry_in = float(open_until) - time.time()
        if retry_in > 0:
            raise BreakerOpen(retry_in)
        # Half-open: one trial at a time across all gateways; it expires with the cooldown
        # so a trial whose gateway died does not keep the circuit half-open forever.
        if not await self.redis.set(self.trial_key, "1", nx=True, px=int(self.cooldown * 1000)):
            raise BreakerOpen(1.0)

    async def success(self) -> None:
        # Only touch Redis when there is something to reset: successes are the hot path.
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.key, "failures")
        pipe.hget(self.key, "open_until")
        failures, open_until = await pipe.execute()
        if failures not in (None, b"0") or open_until is not None:
            await self.redis.delete(self.key, self.trial_key)

    async def failure(self) -> bool:
        """Count a failure; returns True when this failure opened the circuit."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(self.key, "failures", 1)
        pipe.hexists(self.key, "open_until")
        failures, was_open = await pipe.execute()
        if failures >= self.threshold or was_open:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(self.key, mapping={"open_until": time.time() + self.cooldown, "failures": 0})
            pipe.delete(self.trial_key)
            await pipe.execute()
            return True
        return False
