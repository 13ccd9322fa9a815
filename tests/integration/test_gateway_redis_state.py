"""The shared state in real Redis (db 15): the limiter, the key pool and the breaker, as
several gateway processes (here: several instances on separate connections) see them."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from gateway.breaker import BreakerOpen, RedisBreaker
from gateway.keypool import AllKeysExhausted, KeyPool
from gateway.limiter import LimitTimeout, SharedLimits
from gateway.settings import GatewaySettings
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


def test_reservations_hold_room_across_gateways_and_a_dead_ones_is_charged(redis_client: Redis):
    from gateway.meta import SessionMeta
    from gateway.reservations import BudgetHeld, BudgetUsedUp, Reservations
    from jobs import keys

    # A reservation lives ttl + read timeout + max wait: 1.7 s here.
    settings = GatewaySettings(budget_user_tokens=250, gateway_read_timeout=0.1, gateway_max_wait=0.6)
    meta = SessionMeta(job_id="j", user="URES", model="gemini-2.5-flash", ttl=1)
    used = keys.daily_usage("user", "URES")

    async def scenario() -> None:
        one, two = Reservations(aredis(), settings), Reservations(aredis(), settings)
        first = await one.reserve("s1", meta, 100, 0.01, stopped=lambda: False)
        assert [b.scope for b in first.budgets] == ["user"]
        second = await two.reserve("s2", meta, 200, 0.02, stopped=lambda: False)  # 0 used + 100 held < 250
        with pytest.raises(BudgetHeld):  # 0 used + 300 held: the room is held by requests in flight
            await two.reserve("s3", meta, 1, 0.0, stopped=lambda: False)
        assert sorted(redis_client.hkeys(first.held_in[0])) == sorted([first.id.encode(), second.id.encode()])
        # The gateways holding them die: nobody settles them. Once they expire, the next
        # request to look charges them in full, and finds the budget used up.
        await asyncio.sleep(1.9)
        with pytest.raises(BudgetUsedUp, match=r"<@URES>'s daily Gemini budget is used up \(300/250 tokens"):
            await one.reserve("s4", meta, 1, 0.0, stopped=lambda: False)
        assert int(redis_client.hget(used, "tokens")) == 300
        assert float(redis_client.hget(used, "cost_usd")) == pytest.approx(0.03)
        assert redis_client.hlen(first.held_in[0]) == 0 and 0 < redis_client.ttl(used) <= keys.DAILY_TTL
        exempt = meta.model_copy(update={"budget_exempt": True})
        assert (await one.reserve("s5", exempt, 10**9, 1e9, stopped=lambda: False)).budgets == ()

    run(scenario())
