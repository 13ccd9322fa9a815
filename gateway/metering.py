"""Attributing every response's tokens (and estimated cost) to its session, user, channel
and model: session totals and daily totals per user and channel in Redis, Prometheus.

What a response is charged: the usage it reported when it arrived whole; its reservation
(gateway/reservations.py) when it reported none or was cut off (the client hung up,
the upstream stream broke), or its reported usage if that is more. Settling removes the
reservation in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from gateway import metrics
from gateway.meta import SessionMeta
from gateway.reservations import Reservation
from gateway.usage import Usage
from jobs import keys


def price_for(prices: dict[str, dict[str, float]], model: str) -> dict[str, float]:
    """The entry of the longest model prefix that matches; for a model no entry matches,
    the most expensive known price of each kind (an unknown model never costs $0)."""
    if is_priced(prices, model):
        return prices[max((p for p in prices if model.startswith(p)), key=len)]
    kinds = {kind for price in prices.values() for kind in price}
    return {kind: max(price.get(kind, 0.0) for price in prices.values()) for kind in kinds}


def is_priced(prices: dict[str, dict[str, float]], model: str) -> bool:
    """Whether an entry of the table prices ``model`` (else it pays the most expensive)."""
    return any(model.startswith(prefix) for prefix in prices)


def estimate_cost(prices: dict[str, dict[str, float]], model: str, usage: Usage) -> float:
    """USD: prompt tokens at the input price, answer and thought tokens at the output
    price (the API bills thoughts as output). Cached-token discounts are ignored: the
    estimate errs high."""
    price = price_for(prices, model)
    output = usage.candidates + usage.thoughts
    return (usage.prompt * price.get("input", 0.0) + output * price.get("output", 0.0)) / 1e6


@dataclass(frozen=True)
class Charge:
    """What one response counts against its session and budgets."""

    tokens: int
    usd: float
    usage: Usage | None  # what the response reported, when it did
    estimated: bool  # charged its reservation: no usage reported, or cut off

    @classmethod
    def settle(
        cls, prices: dict[str, dict[str, float]], model: str, reservation: Reservation, usage: Usage | None, whole: bool
    ) -> Charge:
        if usage is not None:
            tokens, usd = usage.total, estimate_cost(prices, model, usage)
            if whole:
                return cls(tokens, usd, usage, estimated=False)
            return cls(max(tokens, reservation.tokens), max(usd, reservation.usd), usage, estimated=True)
        return cls(reservation.tokens, reservation.usd, None, estimated=True)


class Meter:
    def __init__(self, redis: Redis, session_ttl_extra: int = 86400) -> None:
        self.redis = redis
        # Usage outlives the session by a day so the worker can read the final totals.
        self.session_ttl_extra = session_ttl_extra

    async def record(
        self,
        session_id: str,
        meta: SessionMeta,
        model: str,
        charge: Charge,
        reservation: Reservation | None,
        wait: float,
        absorbed_429: int,
    ) -> dict[str, dict[str, float]]:
        """Count one answered request and release its reservation; returns the totals of its
        user's and channel's day and of its question, as budgets read them."""
        usage = charge.usage or Usage()
        for kind, count in usage.as_dict().items():
            if count:
                metrics.TOKENS.labels(kind, model).inc(count)
        if charge.estimated:
            metrics.ESTIMATED.labels(model).inc(charge.tokens)
        metrics.COST.labels(model).inc(charge.usd)
        session_key = keys.session_usage(session_id)
        date = reservation.date if reservation is not None else keys.utc_date()
        daily = {"user": keys.daily_usage("user", meta.user, date)}
        if meta.channel:
            daily["channel"] = keys.daily_usage("channel", meta.channel, date)
        daily["model"] = keys.daily_usage("model", model, date)  # App Home's per-model totals (bot/home.py)
        pipe = self.redis.pipeline(transaction=True)
        if reservation is not None:
            for held in reservation.held_in:
                pipe.hdel(held, reservation.id)
        for kind, count in usage.as_dict().items():
            if kind != "total":
                pipe.hincrby(session_key, f"{kind}_tokens", count)
        pipe.hincrby(session_key, "total_tokens", charge.tokens)
        pipe.hincrby(session_key, "requests", 1)
        pipe.hincrby(session_key, "estimated_requests", int(charge.estimated))
        pipe.hincrbyfloat(session_key, "cost_usd", charge.usd)
        pipe.hincrby(session_key, "absorbed_429", absorbed_429)
        pipe.hincrbyfloat(session_key, "wait_seconds", wait)
        pipe.expire(session_key, meta.ttl + self.session_ttl_extra)
        for key in daily.values():
            pipe.hincrby(key, "tokens", charge.tokens)
            pipe.hincrbyfloat(key, "cost_usd", charge.usd)
            pipe.hincrby(key, "requests", 1)
            pipe.expire(key, keys.DAILY_TTL)
        for key in daily.values():
            pipe.hgetall(key)
        pipe.hmget(session_key, "total_tokens", "cost_usd")
        results = await pipe.execute()
        question_tokens, question_usd = results[-1]
        totals = results[-len(daily) - 1 : -1]
        found = {kind: {k.decode(): float(v) for k, v in raw.items()} for kind, raw in zip(daily, totals)}
        found["question"] = {"tokens": float(question_tokens or 0), "cost_usd": float(question_usd or 0)}
        return found

    async def release(self, reservation: Reservation) -> None:
        """Drop a reservation that nothing was charged for (refused, or an error answer)."""
        if reservation.budgets:
            pipe = self.redis.pipeline(transaction=True)
            for held in reservation.held_in:
                pipe.hdel(held, reservation.id)
            await pipe.execute()

    async def stop(self, session_id: str, meta: SessionMeta, reason: str) -> None:
        """Tell the worker this session must end (kept only if none was set before)."""
        key = keys.session_usage(session_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(key, "stop_reason", reason)
        pipe.expire(key, meta.ttl + self.session_ttl_extra)
        await pipe.execute()
