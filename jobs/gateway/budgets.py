"""Daily budgets per user and per channel (tokens or estimated USD, UTC day).

The rule is one pure function, used by the worker before a container starts (sync
Redis, :func:`check_budget`) and by the gateway after metering each response.
"""

from __future__ import annotations

from collections.abc import Mapping

from redis import Redis

from jobs import keys
from jobs.gateway.meta import SessionMeta
from jobs.gateway.settings import GatewaySettings


def over_budget(settings: GatewaySettings, meta: SessionMeta, totals: Mapping[str, Mapping[str, float]]) -> str | None:
    """A message naming the budget crossed (used/limit), or None. ``totals`` maps "user"
    and "channel" to today's ``{"tokens": .., "cost_usd": ..}``."""
    if meta.budget_exempt:
        return None
    checks = [
        ("user", meta.user, "tokens", settings.budget_user_tokens),
        ("user", meta.user, "cost_usd", settings.budget_user_usd),
        ("channel", meta.channel, "tokens", settings.budget_channel_tokens),
        ("channel", meta.channel, "cost_usd", settings.budget_channel_usd),
    ]
    for kind, name, field, limit in checks:
        if not limit or not name:
            continue
        used = float(totals.get(kind, {}).get(field, 0))
        if used >= limit:
            who = f"<@{name}>'s" if kind == "user" else f"channel <#{name}>'s"
            amount = f"{int(used):,}/{int(limit):,} tokens" if field == "tokens" else f"${used:.2f}/${limit:.2f}"
            return f"{who} daily Gemini budget is used up ({amount} today, UTC); it renews at 00:00 UTC."
    return None


def check_budget(redis: Redis, settings: GatewaySettings, meta: SessionMeta) -> str | None:
    """For the worker, before a container starts: a refusal message, or None."""
    if meta.budget_exempt:
        return None
    totals: dict[str, dict[str, float]] = {}
    for kind, name in (("user", meta.user), ("channel", meta.channel)):
        if name:
            raw = redis.hgetall(keys.daily_usage(kind, name))
            totals[kind] = {k.decode(): float(v) for k, v in raw.items()}  # type: ignore[union-attr]
    return over_budget(settings, meta, totals)
