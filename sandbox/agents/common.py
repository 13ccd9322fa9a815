"""Helpers the stream parsers share: text shaping, answer de-duplication, error classification."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from sandbox.events import AgentEvent, Diagnostic, ErrorKind

EGRESS_BLOCKED_MESSAGE = "LLM endpoint not reachable (blocked by egress policy)"

SUMMARY_LIMIT = 80
DETAIL_LIMIT = 300


class StreamParser(Protocol):
    @property
    def done(self) -> bool: ...

    def feed(self, line: str) -> list[AgentEvent]: ...

    def finish(self, exit_code: int | None, stderr_tail: str) -> list[AgentEvent]: ...


# --- text --------------------------------------------------------------------------

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


def as_int(value: object) -> int | None:
    # bool is an int subclass; a stray true must not read as 1 token
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


# --- answer text -------------------------------------------------------------------


class AnswerBuffer:
    """Assembles the answer from streamed deltas and whole-message snapshots, so that
    the text handed out never repeats itself.

    Agents mix two kinds of text events: *deltas* (a new piece of text) and
    *snapshots* (a complete message: either the only copy of its text, when nothing
    was streamed, or a recap of text already streamed as deltas). A *segment* is the
    text since the last tool call: recaps cover one segment or the whole answer.
    """

    def __init__(self) -> None:
        self._text = ""
        self._segment = ""
        self._saw_deltas = False

    @property
    def text(self) -> str:
        return self._text

    def add_delta(self, text: str) -> str:
        self._saw_deltas = True
        self._append(text)
        return text

    def add_snapshot(self, text: str) -> str:
        """Returns the part of ``text`` not handed out yet ('' for a pure recap)."""
        new = self._unseen_part(text)
        self._append(new)
        return new

    def end_segment(self) -> None:
        self._segment = ""

    def _append(self, text: str) -> None:
        self._text += text
        self._segment += text

    def _unseen_part(self, snapshot: str) -> str:
        # A snapshot that extends the current segment: a recap of it (plus, rarely,
        # a tail the deltas missed), or a growing snapshot from an older CLI.
        if self._segment and snapshot.startswith(self._segment):
            return snapshot[len(self._segment) :]
        if not self._saw_deltas:
            # Nothing is streamed: every message is new text, even one that happens to
            # repeat earlier words ("... reply `done`." then "done").
            return snapshot
        if snapshot.startswith(self._text):
            return snapshot[len(self._text) :]  # a recap of the whole answer so far
        # While streaming, a snapshot only ever repeats streamed text (perhaps
        # re-trimmed); the final result event carries the authoritative answer anyway.
        return ""


# --- failures ----------------------------------------------------------------------

# Node's networking errors, undici's and the proxy agents' wording for a refused
# CONNECT: what an agent prints when the egress proxy does not let it through.
_EGRESS = re.compile(
    r"ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|fetch failed|tunneling socket"
    r"|Proxy response \(\d+\)|proxy[^\n]{0,80}\b403\b|\b403\b[^\n]{0,80}proxy"
    r"|CONNECT[^\n]{0,40}\b403\b",
    re.IGNORECASE,
)

Rule = tuple[ErrorKind, re.Pattern[str]]


def looks_like_egress_block(text: str) -> bool:
    return bool(_EGRESS.search(text))


def classify(text: str, rules: Iterable[Rule]) -> ErrorKind:
    """The error kind for an agent's error text. Network failures win: behind a
    blocked proxy an agent's other complaints (auth, model list) are side effects."""
    if looks_like_egress_block(text):
        return ErrorKind.EGRESS_BLOCKED
    for kind, pattern in rules:
        if pattern.search(text):
            return kind
    return ErrorKind.AGENT


def stderr_excerpt(stderr: str, limit: int = DETAIL_LIMIT) -> str:
    """The end of stderr, on one line: the reason is usually in the last lines."""
    lines = [line.strip() for line in strip_ansi(stderr).splitlines() if line.strip()]
    text = " | ".join(lines)
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def exit_phrase(agent: str, exit_code: int | None) -> str:
    if exit_code is None:
        return f"{agent} stopped"
    return f"{agent} exited with code {exit_code}"


def with_context(message: str, stderr: str) -> str:
    excerpt = stderr_excerpt(stderr)
    return f"{message} ({excerpt})" if excerpt and excerpt not in message else message


# --- the shared parser skeleton ------------------------------------------------------

Handler = Callable[[dict[str, Any]], list[AgentEvent]]


class JsonLinesParser:
    """One JSON object per line, dispatched on its ``type``. Subclasses fill
    ``_handlers`` and say how an unfinished run ends (``_interrupted``, ``_failure``)."""

    def __init__(self, workspace: str | None = None) -> None:
        self._workspace = workspace
        self._answer = AnswerBuffer()
        self._done = False
        self._finished = False
        self._handlers: dict[str, Handler] = {}

    @property
    def done(self) -> bool:
        """True once the result is in: nothing printed after it changes the outcome."""
        return self._done

    @property
    def answer_text(self) -> str:
        """The answer text handed out as ``TextDelta`` events so far."""
        return self._answer.text

    def feed(self, line: str) -> list[AgentEvent]:
        if self._done:
            return []
        line = line.rstrip("\r\n")
        if not line.strip():
            return []
        try:
            event = json.loads(line)
        except ValueError:
            return [Diagnostic(text=line)]
        if not isinstance(event, dict):
            return [Diagnostic(text=line)]
        handler = self._handlers.get(str(event.get("type")))
        return handler(event) if handler else []

    def finish(self, exit_code: int | None, stderr_tail: str) -> list[AgentEvent]:
        """The process ended: close open tool calls and explain a missing result."""
        if self._finished or self._done:
            self._finished = True
            return []
        self._finished = True
        return [*self._interrupted(), self._failure(exit_code, stderr_tail)]

    def _interrupted(self) -> list[AgentEvent]:
        raise NotImplementedError

    def _failure(self, exit_code: int | None, stderr_tail: str) -> AgentEvent:
        raise NotImplementedError
