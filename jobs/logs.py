"""Structured logs: one JSON object per line, carrying the job, repo, user and thread.

Call ``configure_json_logging()`` once at process start (bot, worker, dashboard), before
RQ's worker starts: RQ only installs its own plain-text handlers when the root logger has
none, so with ours in place its lines come out as JSON too.

Context travels in a ``contextvars.ContextVar`` rather than in ``extra=`` on every call, so
code deep inside the sandbox or the publisher logs with the job's identity without
knowing it::

    with log_context(job_id=job.id, repo=q.repo, user=q.user, thread=q.thread_key):
        log.info("sandbox started")

Secrets never reach the output: a filter on the handler rewrites the record (message,
arguments, traceback, ``extra`` values) before any formatter sees it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

from jobs.redaction import Redactor

CONTEXT_FIELDS = ("job_id", "repo", "user", "thread")
REDACTED = "[redacted]"

# Read-only default: contexts are replaced, never mutated, so one empty mapping is shared safely.
_context: ContextVar[Mapping[str, str]] = ContextVar("askbox_log_context", default=MappingProxyType({}))

# Token shapes that must never be logged whatever the key they sit under: Slack bot/user/
# app tokens, Google API keys (Gemini), and bearer credentials in echoed headers.
_SECRET_PATTERNS = re.compile(
    r"xox[a-z]-[A-Za-z0-9-]+"
    r"|xapp-[A-Za-z0-9-]+"
    r"|AIza[0-9A-Za-z_\-]{20,}"
    r"|(?<=Bearer )[A-Za-z0-9._~+/=-]{8,}",
)
# ``extra`` keys whose values are secrets by name, whatever they look like.
_SECRET_KEY = re.compile(r"key|token|secret|password|authorization", re.IGNORECASE)

# Everything a bare LogRecord carries; any other attribute came from ``extra=``.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "askbox_context",
}


_BASE_FIELDS = frozenset({"ts", "level", "logger", "message", "exc_info", "stack_info"})


def redact(text: str) -> str:
    return _SECRET_PATTERNS.sub(REDACTED, text)


@contextmanager
def log_context(
    *,
    job_id: str | None = None,
    repo: str | None = None,
    user: str | None = None,
    thread: str | None = None,
) -> Iterator[None]:
    """Adds fields to every log line inside the block; ``None`` keeps an outer value."""
    given = {"job_id": job_id, "repo": repo, "user": user, "thread": thread}
    merged = {**_context.get(), **{k: str(v) for k, v in given.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, str]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Stamps the record with the context of the thread or task that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.askbox_context = dict(_context.get())
        return True


class RedactSecrets(logging.Filter):
    """Rewrites the record in place so no handler or formatter can print a secret."""

    def __init__(self, configured: Redactor | None = None) -> None:
        super().__init__()
        self.configured = configured or Redactor(())

    def redact(self, text: str) -> str:
        return redact(self.configured(text))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the line
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key in _RECORD_ATTRS:
                continue
            if _SECRET_KEY.search(key):
                setattr(record, key, REDACTED)
            elif isinstance(value, str):
                setattr(record, key, self.redact(value))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = getattr(record, "askbox_context", None)
        entry.update(context if context is not None else _context.get())
        for key, value in record.__dict__.items():
            # An explicit ``extra=`` value is more specific than the context; it may not
            # replace the line's own fields.
            if key not in _RECORD_ATTRS and key not in _BASE_FIELDS:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        # default=str: an odd ``extra`` value (a Path, a datetime) must not drop the line.
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_json_logging(
    level: str | int = "INFO", stream: IO[str] | None = None, secrets: Iterable[str] = ()
) -> logging.Handler:
    """Replaces the root logger's handlers with one JSON-lines handler (stderr by default).

    ``secrets`` (the settings' configured values) are redacted in every form, on top of
    the token shapes recognised anyway.

    Replacing rather than adding keeps every line on the stream parseable, even if
    something called ``logging.basicConfig`` earlier. Idempotent.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactSecrets(Redactor(secrets)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
