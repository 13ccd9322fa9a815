"""Attributing every response's tokens (and estimated cost) to its session, user, channel
and model: session totals and daily totals per user and channel in Redis, Prometheus."""

from __future__ import annotations

from redis.asyncio import Redis

from jobs import keys
from jobs.gateway import metrics
from jobs.gateway.meta import SessionMeta
from jobs.gateway.usage import Usage


def price_for(prices: dict[str, dict[str, float]], model: str) -> dict[str, float]:
    """The entry of the longest model prefix that matches (``{}`` when none does)."""
    matches = [prefix for prefix in prices if model.startswith(prefix)]
    return prices[max(matches, key=len)] if matches else {}


def estimate_cost(prices: dict[str, dict[str, float]], model: str, usage: Usage) -> float:
    """USD: prompt tokens at the input price, answer and thought tokens at the output
    price (the API bills thoughts as output). Cached-token discounts are ignored: the
    estimate errs high."""
    price = price_for(prices, model)
    output = usage.candidates + usage.thoughts
    return (usage.prompt * price.get("input", 0.0) + output * price.get("output", 0.0)) / 1e6


class Meter:
    def __init__(self, redis: Redis, prices: dict[str, dict[str, float]], session_ttl_extra: int = 86400) -> None:
        self.redis = redis
        self.prices = prices
        # Usage outlives the session by a day so the worker can read the final totals.
        self.session_ttl_extra = session_ttl_extra

    async def record(self, session_id: str, meta: SessionMeta, model: str, usage: Usage | None,
                     wait: float, absorbed_429: int) -> dict[str, dict[str, float]]:
        """Count one answered request; returns today's totals of its user and channel."""
        usage = usage or Usage()
        cost = estimate_cost(self.prices, model, usage)
        for kind, count in usage.as_dict().items():
            if count:
                metrics.TOKENS.labels(kind, model).inc(count)
        metrics.COST.labels(model).inc(cost)
        session_key = keys.session_usage(session_id)
        daily = {"user": keys.daily_usage("user", meta.user)}
        if meta.channel:
            daily["channel"] = keys.daily_usage("channel", meta.channel)
        pipe = self.redis.pipeline(transaction=True)
        for kind, count in usage.as_dict().items():
            pipe.hincrby(session_key, f"{kind}_tokens", count)
        pipe.hincrby(session_key, "requests", 1)
        pipe.hincrbyfloat(session_key, "cost_usd", cost)
        pipe.hincrby(session_key, "absorbed_429", absorbed_429)
        pipe.hincrbyfloat(session_key, "wait_seconds", wait)
        pipe.expire(session_key, meta.ttl + self.session_ttl_extra)
        for key in daily.values():
            pipe.hincrby(key, "tokens", usage.total)
            pipe.hincrbyfloat(key, "cost_usd", cost)
            pipe.hincrby(key, "requests", 1)
            pipe.expire(key, keys.DAILY_TTL)
        for key in daily.values():
            pipe.hgetall(key)
        results = await pipe.execute()
        totals = results[-len(daily):]
        return {kind: {k.decode(): float(v) for k, v in raw.items()} for kind, raw in zip(daily, totals)}

    async def stop(self, session_id: str, meta: SessionMeta, reason: str) -> None:
        """Tell the worker this session must end (kept only if none was set before)."""
        key = keys.session_usage(session_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(key, "stop_reason", reason)
        pipe.expire(key, meta.ttl + self.session_ttl_extra)
        await pipe.execute()
