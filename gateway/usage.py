"""Token usage: read from responses, kept per session in Redis, read back by the worker.

Each provider reports usage its own way, and a :class:`UsageTracker` is given its reader
(``Reader``: the usage so far and one JSON payload in, the usage after it out):

- Gemini repeats *cumulative* ``usageMetadata`` on every chunk of a stream, so the usage
  of one response is the last chunk's, never the sum of its chunks (:func:`read_gemini`);
- the other providers' readers are in their modules (gateway/providers/).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from redis import Redis

from jobs import keys

# usageMetadata field -> our name (and the Redis hash field, and the Prometheus label).
KINDS = {
    "promptTokenCount": "prompt",
    "candidatesTokenCount": "candidates",
    "thoughtsTokenCount": "thoughts",
    "cachedContentTokenCount": "cached",
    "totalTokenCount": "total",
}


@dataclass(frozen=True)
class Usage:
    prompt: int = 0
    candidates: int = 0
    thoughts: int = 0
    cached: int = 0
    total: int = 0

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Usage:
        values = {name: int(meta.get(field) or 0) for field, name in KINDS.items()}
        return cls(**values)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in KINDS.values()}


Reader = Callable[[Usage | None, dict[str, Any]], Usage | None]


def read_gemini(current: Usage | None, payload: dict[str, Any]) -> Usage | None:
    """A chunk's ``usageMetadata`` replaces what came before (it is cumulative)."""
    meta = payload.get("usageMetadata")
    return Usage.from_metadata(meta) if isinstance(meta, dict) else current


class UsageTracker:
    """Fed the response bytes as they pass; knows the response's final usage.

    SSE is parsed line by line as it streams (so nothing is buffered beyond one line);
    a plain JSON body (or the JSON array a non-SSE stream sends) is parsed at the end.
    """

    MAX_JSON = 16 << 20  # bodies beyond this are passed on but not metered

    def __init__(self, sse: bool, read: Reader = read_gemini) -> None:
        self.sse = sse
        self.read = read
        self._buffer = bytearray()
        self.last: Usage | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if not self.sse:
            if len(self._buffer) > self.MAX_JSON:
                self._buffer.clear()
            return
        *lines, rest = self._buffer.split(b"\n")
        self._buffer = bytearray(rest)
        for line in lines:
            self._line(line)

    def _line(self, line: bytes | bytearray) -> None:
        line = line.strip()
        if not line.startswith(b"data:"):
            return
        try:
            payload = json.loads(line[5:])
        except ValueError:
            return  # OpenAI's closing "data: [DONE]", or a broken line
        if isinstance(payload, dict):
            self.last = self.read(self.last, payload)

    def usage(self) -> Usage | None:
        if self.sse:
            self._line(bytes(self._buffer))
            self._buffer.clear()
        elif self._buffer:
            try:
                body = json.loads(self._buffer)
            except ValueError:
                body = None
            self._buffer.clear()
            for item in body if isinstance(body, list) else [body]:
                if isinstance(item, dict):
                    self.last = self.read(self.last, item)
        return self.last


class SessionState(BaseModel, frozen=True):
    """A session's usage so far, and why it must end (when the gateway says so)."""

    prompt_tokens: int = 0
    candidates_tokens: int = 0
    thoughts_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0
    requests: int = 0
    estimated_requests: int = 0  # charged their reservation: no usage reported, or cut off
    cost_usd: float = 0.0
    absorbed_429: int = 0
    wait_seconds: float = 0.0
    stop_reason: str | None = None


def session_state(redis: Redis, session_id: str) -> SessionState:
    """Read a session's state (sync, for the worker; kept a day after the session)."""
    raw = redis.hgetall(keys.session_usage(session_id))
    fields = {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]
    return SessionState.model_validate(fields)
