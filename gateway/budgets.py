"""Budgets: per user and per channel per UTC day, and per question (tokens or estimated
USD; 0 = none), and the messages that say one is used up.

The rule is used in three places, all reading the same Redis hashes: the worker before a
container starts (sync Redis, :func:`check_budget`), the gateway when it reserves a
request's spend (gateway/reservations.py, atomically in Redis), and the gateway after
it settled a response (:func:`over_budget`, which ends the session at once).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from redis import Redis

from gateway.meta import SessionMeta
from gateway.settings import GatewaySettings
from jobs import keys

TITLES = {"gemini": "Gemini", "anthropic": "Anthropic", "openai": "OpenAI"}  # as the providers name themselves


@dataclass(frozen=True)
class Budget:
    """One scope's limits and where its spend is kept."""

    scope: str  # "user", "channel" or "question"
    name: str  # the user's or channel's id, or the session's
    tokens: int  # 0 = no limit
    usd: float  # 0 = no limit

    def used_key(self, date: str) -> str:
        if self.scope == "question":
            return keys.session_usage(self.name)
        return keys.daily_usage(self.scope, self.name, date)

    def reserved_key(self, date: str) -> str:
        return keys.budget_reserved(self.scope, self.name, date)

    @property
    def fields(self) -> tuple[str, str]:
        """The used hash's token and USD fields."""
        return ("total_tokens", "cost_usd") if self.scope == "question" else ("tokens", "cost_usd")

    def used_up(self, kind: str, used: float, title: str = "Gemini") -> str:
        """The message for a budget used up (``kind`` "tokens" or "cost_usd"), naming the
        provider (``title``) whose request found it so: the budget itself covers them all."""
        limit = self.tokens if kind == "tokens" else self.usd
        amount = f"{int(used):,}/{int(limit):,} tokens" if kind == "tokens" else f"${used:.2f}/${limit:.2f}"
        if self.scope == "question":
            return f"This question's {title} budget is used up ({amount}); ask a narrower question."
        who = f"<@{self.name}>'s" if self.scope == "user" else f"channel <#{self.name}>'s"
        return f"{who} daily {title} budget is used up ({amount} today, UTC); it renews at 00:00 UTC."


def budgets_for(settings: GatewaySettings, meta: SessionMeta, session_id: str | None = None) -> list[Budget]:
    """The budgets a session's spend counts against (none for an exempt user)."""
    if meta.budget_exempt:
        return []
    found = [
        Budget("user", meta.user, settings.budget_user_tokens, settings.budget_user_usd),
        Budget("channel", meta.channel or "", settings.budget_channel_tokens, settings.budget_channel_usd),
        Budget("question", session_id or "", settings.budget_question_tokens, settings.budget_question_usd),
    ]
    return [b for b in found if b.name and (b.tokens or b.usd)]


def over_budget(
    settings: GatewaySettings,
    meta: SessionMeta,
    totals: Mapping[str, Mapping[str, float]],
    session_id: str | None = None,
    title: str = "Gemini",
) -> str | None:
    """A message naming the budget crossed (used/limit), or None. ``totals`` maps a scope
    ("user", "channel", "question") to its ``{"tokens": .., "cost_usd": ..}``."""
    for budget in budgets_for(settings, meta, session_id):
        spent = totals.get(budget.scope, {})
        for kind, limit in (("tokens", budget.tokens), ("cost_usd", budget.usd)):
            used = float(spent.get(kind, 0))
            if limit and used >= limit:
                return budget.used_up(kind, used, title)
    return None


def check_budget(redis: Redis, settings: GatewaySettings, meta: SessionMeta) -> str | None:
    """For the worker, before a container starts: a refusal message, or None. The budgets
    count every provider's spend together."""
    totals: dict[str, dict[str, float]] = {}
    for budget in budgets_for(settings, meta):
        raw = redis.hgetall(budget.used_key(keys.utc_date()))
        totals[budget.scope] = {k.decode(): float(v) for k, v in raw.items()}  # type: ignore[union-attr]
    return over_budget(settings, meta, totals, title=TITLES[meta.provider])
