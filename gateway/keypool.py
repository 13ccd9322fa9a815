"""The pool of real API keys: which key the next request goes out on.

Spreads requests over the keys with quota left: keys cooling down after an upstream 429
(for its retryDelay) or out of their upstream per-day quota are skipped, and among the
rest the one with the most requests left in the current minute goes first (ties at
random, so gateways do not all pick the same key). The cooldown and per-day marks are in
Redis, so every gateway (and the service's own calls) avoid a key one of them saw refused.
The selection itself is not something ``limits`` offers, hence this module.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.limiter import LimitTimeout, SharedLimits, sleep_until
from jobs import keys


@dataclass(frozen=True)
class ApiKey:
    id: str  # what logs, metrics and Redis see
    secret: str

    def __repr__(self) -> str:  # never the secret, even in a traceback
        return f"ApiKey({self.id})"


class AllKeysExhausted(Exception):
    """Every key is out of its per-day quota (ours or the upstream's)."""

    def __init__(self, upstream: bool, keys: int, reset_at: float, quota_id: str | None = None) -> None:
        super().__init__("daily quota used up on every key")
        self.upstream = upstream  # True: the API said so; False: our own daily limit
        self.keys = keys
        self.reset_at = reset_at  # epoch seconds
        self.quota_id = quota_id


class KeyPool:
    def __init__(self, redis: Redis, limits: SharedLimits, secrets: list[str], title: str = "Gemini") -> None:
        if not secrets:
            raise ValueError(f"no {title} API key: set {title.upper()}_API_KEY or ASKBOX_{title.upper()}_API_KEYS")
        self.redis = redis
        self.limits = limits
        self.keys = [ApiKey(keys.key_id(s), s) for s in secrets]
        self._quota_ids: dict[str, str] = {}  # last per-day quotaId seen per key (for messages)

    async def cool(self, key: ApiKey, seconds: float) -> None:
        """Skip ``key`` for ``seconds`` (after an upstream 429), on every gateway."""
        await self.redis.set(keys.key_cooldown(key.id), "1", px=max(1, int(seconds * 1000)))

    async def exhaust_for_day(self, key: ApiKey, reset_at: float, quota_id: str) -> None:
        self._quota_ids[key.id] = quota_id
        ttl = max(1, int((reset_at - time.time()) * 1000))
        await self.redis.set(keys.key_day_quota(key.id), f"{reset_at}|{quota_id}", px=ttl)

    async def lease(self, wait: float) -> tuple[ApiKey, float]:
        """A key with a request slot taken on it, and the seconds waited for it.

        Raises LimitTimeout after ``wait`` seconds, AllKeysExhausted at once when no key
        has daily quota left.
        """
        start = time.monotonic()
        while True:
            pipe = self.redis.pipeline(transaction=False)
            for key in self.keys:
                pipe.pttl(keys.key_cooldown(key.id))
                pipe.get(keys.key_day_quota(key.id))
            marks = await pipe.execute()
            now = time.time()
            wake = [now + 1.0]
            day_blocked: list[float] = []
            quota_id = None
            ready: list[ApiKey] = []
            for i, key in enumerate(self.keys):
                cooling_ms, day_mark = marks[2 * i], marks[2 * i + 1]
                if day_mark:
                    reset, _, quota_id = day_mark.decode().partition("|")
                    day_blocked.append(float(reset))
                elif cooling_ms and cooling_ms > 0:
                    wake.append(now + cooling_ms / 1000)
                else:
                    ready.append(key)
            if len(day_blocked) == len(self.keys):
                raise AllKeysExhausted(True, len(self.keys), min(day_blocked), quota_id)
            remaining = {k.id: await self.limits.requests_remaining(k.id) for k in ready}
            ready.sort(key=lambda k: (-remaining[k.id], random.random()))
            ours_daily: list[float] = []
            for key in ready:
                admission = await self.limits.try_acquire(key.id)
                if admission.ok:
                    return key, time.monotonic() - start
                if admission.daily_reset_at is not None:
                    ours_daily.append(admission.daily_reset_at)
                else:
                    wake.append(admission.retry_at)
            if ours_daily and len(ours_daily) + len(day_blocked) == len(self.keys):
                raise AllKeysExhausted(False, len(self.keys), min(ours_daily + day_blocked))
            await sleep_until(min(wake), start, start + wait)


__all__ = ["AllKeysExhausted", "ApiKey", "KeyPool", "LimitTimeout"]
