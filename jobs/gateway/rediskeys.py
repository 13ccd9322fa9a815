"""The gateway's Redis key layout, in one place (every key starts ``askbox:gateway:``).

Sync readers (the worker) and the async gateway both build keys here, so they cannot
drift apart. Real API keys never appear in Redis: keys are named by :func:`key_id`.
"""

from __future__ import annotations

import datetime as dt
import hashlib

PREFIX = "askbox:gateway:"
LIMITS_PREFIX = PREFIX + "limits"  # the ``limits`` library's own keys live under this
DAILY_TTL = 8 * 86400  # daily totals are kept a week, for reports


def key_id(api_key: str) -> str:
    """A stable, non-secret name for an API key (logs, metrics, Redis)."""
    return "k" + hashlib.sha256(api_key.encode()).hexdigest()[:10]


def token_hash(token: str) -> str:
    # Tokens are stored hashed so a Redis dump does not hand out live credentials.
    return hashlib.sha256(token.encode()).hexdigest()


def token(token_value: str) -> str:
    return f"{PREFIX}token:{token_hash(token_value)}"


def session(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}"


def usage(session_id: str) -> str:
    return f"{PREFIX}usage:{session_id}"


def utc_date(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%d")


def daily(kind: str, name: str, date: str | None = None) -> str:
    """Daily totals of one user or channel (``kind`` is "user" or "channel")."""
    return f"{PREFIX}daily:{date or utc_date()}:{kind}:{name}"


def cooldown(kid: str) -> str:
    return f"{PREFIX}cooldown:{kid}"


def day_quota(kid: str) -> str:
    return f"{PREFIX}dayquota:{kid}"


def breaker(name: str) -> str:
    return f"{PREFIX}breaker:{name}"
