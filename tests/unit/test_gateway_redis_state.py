"""The shared state in real Redis (db 15): the limiter, the key pool and the breaker, as
several gateway processes (here: several instances on separate connections) see them."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from jobs.gateway.breaker import BreakerOpen, RedisBreaker
from jobs.gateway.keypool import AllKeysExhausted, KeyPool
from jobs.gateway.limiter import LimitTimeout, SharedLimits
from jobs.gateway.settings import GatewaySettings
from tests.conftest import REDIS_TEST_URL

pytestmark = pytest.mark.redis


def run(coro):
    async def scoped():
        try:
            return await coro
        finally:
            for client in CLIENTS:
                await client.aclose()
            CLIENTS.clear()
    return asyncio.run(scoped())


CLIENTS: list[AsyncRedis] = []


def aredis() -> AsyncRedis:
    client = AsyncRedis.from_url(REDIS_TEST_URL)
    CLIENTS.append(client)
    return client


def test_two_limiters_share_one_moving_window(redis_client: Redis):
    settings = GatewaySettings(gemini_request_limit="3/1 second")

    async def scenario() -> list[float]:
        a, b = SharedLimits(aredis(), settings), SharedLimits(aredis(), settings)
        for limiter in (a, b):  # connect first: a slow first connection must not spread the first three
            await limiter.requests_remaining("warm-up")
        times = []
        for limiter in (a, b, a, b, a, b):
            await limiter.acquire("k1", wait=5)
            times.append(time.monotonic())
        assert not (await a.try_acquire("k1")).ok  # no slot is left now
        return times

    times = run(scenario())
    assert times[3] - times[0] >= 0.95  # the 4th waited for the 1st to leave the window


def test_tokens_are_charged_after_and_block_admission(redis_client: Redis):
    settings = GatewaySettings(gemini_token_limit="100/2 seconds")

    async def scenario() -> None:
        limits = SharedLimits(aredis(), settings)
        assert (await limits.try_acquire("k1")).ok
        await limits.charge("k1", 150)  # overshoots: still recorded
        refused = await limits.try_acquire("k1")
        assert not refused.ok and refused.retry_at > time.time()
        assert (await limits.try_acquire("k2")).ok  # per key

    run(scenario())


def test_pool_skips_cooling_keys_and_reports_daily_exhaustion(redis_client: Redis):
    settings = GatewaySettings(gemini_daily_limit="1/day")

    async def scenario() -> None:
        redis = aredis()
        pool = KeyPool(redis, SharedLimits(redis, settings), ["secret-a", "secret-b"])
        a, b = pool.keys
        await pool.cool(a, 5)
        key, _ = await pool.lease(wait=1)
        assert key == b and "secret" not in repr(key)
        with pytest.raises(LimitTimeout):  # a cools (it comes back), b has no daily slot: wait
            await pool.lease(wait=0.2)
        await redis.delete("askbox:gateway:cooldown:" + a.id)
        assert (await pool.lease(wait=1))[0] == a
        with pytest.raises(AllKeysExhausted) as raised:
            await pool.lease(wait=1)
        assert raised.value.upstream is False and raised.value.keys == 2

    run(scenario())


def test_breaker_opens_shared_and_half_opens_once(redis_client: Redis):
    async def scenario() -> None:
        one = RedisBreaker(aredis(), "t", threshold=2, cooldown=0.3)
        two = RedisBreaker(aredis(), "t", threshold=2, cooldown=0.3)
        await one.check()
        assert not await one.failure()
        await two.success()  # a success in between resets the count
        assert not await two.failure()
        assert await one.failure()
        with pytest.raises(BreakerOpen):
            await two.check()  # opened by the other instance
        assert await one.state() == "open"
        await asyncio.sleep(0.35)
        await two.check()  # the single trial
        with pytest.raises(BreakerOpen):
            await one.check()
        assert await two.failure()  # the trial failed: open again
        assert await one.state() == "open"
        await asyncio.sleep(0.35)
        await one.check()
        await one.success()
        assert await two.state() == "closed"

    run(scenario())
