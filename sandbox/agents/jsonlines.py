"""What a stream parser is, and the skeleton of one for CLIs that print JSON lines.

Every agent CLI we run prints one JSON object per line, tagged by ``type``; the skeleton
does the line handling, the answer buffer and the end of the run, and a parser for one
CLI supplies its handlers and its ``AgentFailures``; ``ToolCalls`` keeps its tool calls.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from sandbox.agents.answer import AnswerBuffer
from sandbox.agents.events import AgentEvent, Diagnostic, ToolFinished
from sandbox.agents.failures import AgentFailures


class StreamParser(Protocol):
    """Turns one run's stdout, line by line, into events; see the package docstring."""

    @property
    def done(self) -> bool: ...

    def feed(self, line: str) -> list[AgentEvent]: ...

    def finish(self, exit_code: int | None, stderr_tail: str) -> list[AgentEvent]: ...


Handler = Callable[[dict[str, Any]], list[AgentEvent]]


class JsonLinesParser:
    """One JSON object per line, dispatched on its ``type``. Subclasses fill
    ``_handlers``, name their ``failures`` and record tool calls in ``_tools``."""

    failures: ClassVar[AgentFailures]

    def __init__(self, workspace: str | None = None) -> None:
        self._workspace = workspace
        self._answer = AnswerBuffer()
        self._done = False
        self._finished = False
        self._handlers: dict[str, Handler] = {}
        self._tools = ToolCalls()

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
        return [*self._interrupted(), self.failures.from_stderr(exit_code, stderr_tail)]

    def _interrupted(self) -> list[AgentEvent]:
        return self._tools.interrupt()


class ToolCalls:
    """One run's tool calls by id: what each started as (tool, summary), so that its end
    can be told in the same words, and which are still open, in the order they started,
    so that a run that stops in the middle closes them."""

    def __init__(self) -> None:
        self._started: dict[str, tuple[str, str]] = {}
        self._open: dict[str, None] = {}  # an ordered set

    def __len__(self) -> int:
        return len(self._started)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._started

    def oldest_open(self) -> str | None:
        return next(iter(self._open), None)

    def start(self, call_id: str, tool: str, summary: str) -> None:
        self._started[call_id] = (tool, summary)
        self._open[call_id] = None

    def finish(self, call_id: str) -> tuple[str, str] | None:
        """The call's (tool, summary) as it started; None for a call never started."""
        self._open.pop(call_id, None)
        return self._started.get(call_id)

    def interrupt(self) -> list[AgentEvent]:
        """The ends of the calls still open: the run stopped in their middle."""
        events: list[AgentEvent] = [
            ToolFinished(call_id=c, tool=tool, summary=summary, ok=False, detail="interrupted")
            for c, (tool, summary) in ((c, self._started[c]) for c in self._open)
        ]
        self._open.clear()
        return events
