"""Gemini-style error answers, and reading the details of the upstream's errors (the
``retry-after`` headers every provider may send, Gemini's ``RetryInfo`` and quotas).

Clients (the Gemini CLI, google-genai) parse ``{"error": {code, message, status,
details}}``; the gateway's own refusals use the same shape so an agent reports them
like any API error.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_body(code: int, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": _STATUS.get(code, "UNKNOWN")}
    if details:
        error["details"] = details
    return {"error": error}


def error_response(code: int, message: str, *, retry_after: float | None = None) -> web.Response:
    details = None
    headers = {}
    if retry_after is not None:
        details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after:.3f}s"}]
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return web.json_response(error_body(code, message, details), status=code, headers=headers)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds; an HTTP date
    is not sent by the providers served, and reads as no advice)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                seconds = float(value) / scale
            except ValueError:
                continue
            if seconds >= 0:
                return seconds
    return None


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*$")


def parse_duration(value: object) -> float | None:
    """A protobuf Duration in JSON ("1s", "0.250s", "250ms") as seconds."""
    if not isinstance(value, str):
        return None
    match = _DURATION.match(value)
    if not match:
        return None
    seconds = float(match[1])
    return seconds / 1000 if match[2] == "ms" else seconds


@dataclass(frozen=True)
class UpstreamError:
    """What matters in an upstream error body for retrying."""

    retry_delay: float | None  # RetryInfo.retryDelay, seconds
    per_day_quota: str | None  # the quotaId of a per-day QuotaFailure violation

    @classmethod
    def parse(cls, body: bytes) -> UpstreamError:
        try:
            details = json.loads(body).get("error", {}).get("details") or []
        except (ValueError, AttributeError):
            details = []
        delay = None
        per_day = None
        for detail in details if isinstance(details, list) else []:
            if not isinstance(detail, dict):
                continue
            kind = str(detail.get("@type", ""))
            if kind.endswith("google.rpc.RetryInfo"):
                delay = parse_duration(detail.get("retryDelay"))
            elif kind.endswith("google.rpc.QuotaFailure"):
                for violation in detail.get("violations") or []:
                    quota = str(violation.get("quotaId", "")) if isinstance(violation, dict) else ""
                    if "PerDay" in quota:
                        per_day = quota
        return cls(delay, per_day)


# The Gemini API's per-day quotas reset at midnight Pacific time (its documented rule).
_PACIFIC = ZoneInfo("America/Los_Angeles")


def next_pacific_midnight(now: dt.datetime | None = None) -> dt.datetime:
    local = (now or dt.datetime.now(dt.UTC)).astimezone(_PACIFIC)
    midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), tzinfo=_PACIFIC)
    return midnight.astimezone(dt.UTC)


def describe_reset(when: dt.datetime, now: dt.datetime | None = None) -> str:
    """ "14:00 UTC (in 3 h 12 min)" for a message a user reads."""
    now = now or dt.datetime.now(dt.UTC)
    minutes = max(0, int((when - now).total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    span = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return f"{when.astimezone(dt.UTC):%H:%M} UTC (in {span})"
