"""Text shaping for what the parsers hand out: one-line summaries, workspace-relative
paths, and tolerant readers for the loosely typed JSON the agent CLIs print."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

SUMMARY_LIMIT = 80  # a tool step's summary: one line of a progress display
DETAIL_LIMIT = 300  # why a step or a run failed: enough for the reason, not a log dump

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def shorten(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """First line of ``text``, cut to ``limit`` characters; summaries must stay one line."""
    lines = text.strip().splitlines()
    first = lines[0].strip() if lines else ""
    cut = len(lines) > 1
    if len(first) > limit:
        first, cut = first[: limit - 1].rstrip(), True
    return first + "…" if cut else first


def quoted(text: str) -> str:
    return f"'{shorten(text, 60)}'"


def as_code(command: str) -> str:
    return f"`{shorten(command, SUMMARY_LIMIT)}`"


def relative_path(path: str, root: str | None) -> str:
    """``path`` relative to the workspace when it lies inside it: the container's
    absolute paths mean nothing to the person who asked."""
    if not path:
        return path
    if root and os.path.isabs(path):
        root = root.rstrip("/") or "/"
        if path == root:
            return "."
        if path.startswith(root + "/"):
            return path[len(root) + 1 :]
    return path


def first_string(data: object, keys: Sequence[str]) -> str:
    """The first non-empty string among ``keys`` of a dict (agents rename fields)."""
    if not isinstance(data, dict):
        return ""
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def str_or_none(value: object) -> str | None:
    """A non-empty string as is, anything else as None (ids, names, models)."""
    return value if isinstance(value, str) and value else None


def as_int(value: object) -> int | None:
    # bool is an int subclass; a stray true must not read as 1 token
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
