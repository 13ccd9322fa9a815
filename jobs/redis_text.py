"""Redis replies as text: one place that turns what redis-py returns into ``str``.

askbox's clients return bytes (no ``decode_responses``), and redis-py types every reply
as ``bytes | str`` (it cannot know how the client was made): these helpers take either,
so the code reads the same with both kinds of client and the type checker can follow it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def text(value: bytes | str | Any) -> str:
    """A reply (a key, a field, a value) as text; None is the empty string."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def texts(mapping: Mapping[Any, Any]) -> dict[str, str]:
    """A hash reply (HGETALL) as ``{field: value}`` text."""
    return {text(k): text(v) for k, v in mapping.items()}
