"""Parser for Codex CLI's ``codex exec --json`` output.

Event shapes, as recorded from Codex CLI 0.171 against the fake OpenAI API in
tests/fixtures/codex-stream/ (tests/fixtures/record_agent_streams.py):

- ``{"type":"thread.started","thread_id"}``, ``{"type":"turn.started"}``;
- ``{"type":"item.started"|"item.updated"|"item.completed","item":{"id","type",...}}``,
  the item types: ``agent_message`` (``text``: a whole message, there are no deltas),
  ``reasoning`` (never part of the answer), ``command_execution`` (``command``,
  ``aggregated_output``, ``exit_code``, ``status``), ``file_change``, ``mcp_tool_call``,
  ``web_search``, ``todo_list``, and ``error`` (a warning: the run goes on);
- ``{"type":"error","message"}``: a failed request ("Reconnecting... 1/1 (...)" before
  a retry, then the last error);
- ``{"type":"turn.completed","usage":{"input_tokens","cached_input_tokens",
  "output_tokens","reasoning_output_tokens"}}`` ends a run that answered,
  ``{"type":"turn.failed","error":{"message"}}`` one that failed ("unexpected status 401
  Unauthorized: ...", "exceeded retry limit, last status: 429 Too Many Requests",
  "The model `x` does not exist ...", "Codex ran out of room in the model's context window").
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from sandbox.agents import describe
from sandbox.agents.events import (
    AgentError,
    AgentEvent,
    Diagnostic,
    ErrorKind,
    Result,
    Started,
    TextDelta,
    ToolFinished,
    ToolStarted,
    Usage,
)
from sandbox.agents.failures import AgentFailures, Rule, explained
from sandbox.agents.jsonlines import JsonLinesParser
from sandbox.agents.text import DETAIL_LIMIT, as_code, as_int, first_string, shorten, str_or_none, strip_ansi

AGENT = "Codex CLI"

_RULES: list[Rule] = [
    (
        ErrorKind.AUTH,
        re.compile(r"\b401\b|Unauthorized|Incorrect API key|invalid_api_key|OPENAI_API_KEY", re.IGNORECASE),
    ),
    (ErrorKind.QUOTA, re.compile(r"\b429\b|Too Many Requests|rate limit|quota|usage limit", re.IGNORECASE)),
    (
        ErrorKind.CONTEXT_OVERFLOW,
        re.compile(r"context window|context_length_exceeded|maximum context length", re.IGNORECASE),
    ),
    (
        ErrorKind.BAD_MODEL,
        re.compile(r"model `?[^\s`]+`? does not exist|model_not_found|\b404\b|unknown model", re.IGNORECASE),
    ),
]

FAILURES = AgentFailures(
    agent=AGENT,
    rules=_RULES,
    explanations={
        ErrorKind.AUTH: explained("The OpenAI API key is missing or was rejected"),
        ErrorKind.QUOTA: explained("The OpenAI API's rate limit or quota is exhausted"),
        ErrorKind.BAD_MODEL: explained("The model is not available"),
        ErrorKind.CONTEXT_OVERFLOW: explained(
            "The conversation no longer fits the model's context window; start a new thread"
        ),
    },
    ended=f"{AGENT} failed",
    no_answer=f"{AGENT} failed without an answer",
)
_SHELL = re.compile(r"^(?:(?:/usr)?/bin/)?(?:ba)?sh -l?c (?P<script>.+)$", re.DOTALL)


def failure_from_stderr(exit_code: int | None, stderr_tail: str) -> AgentError:
    """The error for a run that ended without a turn.completed or turn.failed event."""
    return FAILURES.from_stderr(exit_code, stderr_tail)


def shell_command(command: str) -> str:
    """The command the agent wrote, without the ``bash -lc '...'`` Codex wraps it in."""
    match = _SHELL.match(command.strip())
    if not match:
        return command
    try:
        words = shlex.split(match["script"])
    except ValueError:
        return match["script"]
    return words[0] if len(words) == 1 else match["script"]


class CodexStreamParser(JsonLinesParser):
    """Stateful: one instance per run. ``workspace`` shortens paths in summaries."""

    failures = FAILURES

    def __init__(self, workspace: str | None = None, model: str | None = None) -> None:
        super().__init__(workspace)
        self._model = model
        self._last_error = ""
        self._handlers = {
            "thread.started": self._on_thread,
            "item.started": self._on_item_started,
            "item.completed": self._on_item_completed,
            "error": self._on_error,
            "turn.completed": self._on_completed,
            "turn.failed": self._on_failed,
        }

    # --- event handlers ----------------------------------------------------------

    def _on_thread(self, event: dict[str, Any]) -> list[AgentEvent]:
        return [Started(session_id=str_or_none(event.get("thread_id")), model=self._model)]

    def _on_item_started(self, event: dict[str, Any]) -> list[AgentEvent]:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") in ("agent_message", "reasoning", "error"):
            return []
        return [self._tool_started(item)]

    def _on_item_completed(self, event: dict[str, Any]) -> list[AgentEvent]:
        item = event.get("item")
        if not isinstance(item, dict):
            return []
        kind = item.get("type")
        if kind == "agent_message":
            text = item.get("text")
            if not isinstance(text, str) or not text:
                return []
            # Each message is whole; a later one (after tool steps) starts a new paragraph.
            if self._answer.text and not self._answer.text.endswith("\n"):
                text = "\n\n" + text
            return [TextDelta(text=self._answer.add_delta(text))]
        if kind == "reasoning":
            return []
        if kind == "error":
            return [Diagnostic(text=f"{AGENT} warning: {first_string(item, ['message']) or 'unknown'}")]
        item_id = str_or_none(item.get("id")) or f"item-{len(self._tools) + 1}"
        events: list[AgentEvent] = []
        if item_id not in self._tools:  # a step reported only once it was done
            events.append(self._tool_started(item))
        return [*events, self._tool_finished(item_id, item)]

    def _on_error(self, event: dict[str, Any]) -> list[AgentEvent]:
        message = first_string(event, ["message"]) or "unknown error"
        self._last_error = message
        return [Diagnostic(text=f"{AGENT} error: {message}")]

    def _on_completed(self, event: dict[str, Any]) -> list[AgentEvent]:
        self._done = True
        usage = event.get("usage")
        return [*self._interrupted(), Result(text=self._answer.text, usage=_usage(usage))]

    def _on_failed(self, event: dict[str, Any]) -> list[AgentEvent]:
        self._done = True
        error = event.get("error")
        message = first_string(error, ["message"]) or self._last_error or "the run failed"
        kind = FAILURES.classify(message)
        return [*self._interrupted(), AgentError(kind=kind, message=FAILURES.message(kind, strip_ansi(message), None))]

    # --- tools -------------------------------------------------------------------

    def _tool_started(self, item: dict[str, Any]) -> ToolStarted:
        self._answer.end_segment()
        tool, summary = describe_item(item, self._workspace)
        call_id = str_or_none(item.get("id")) or f"item-{len(self._tools) + 1}"
        self._tools.start(call_id, tool, summary)
        return ToolStarted(call_id=call_id, tool=tool, summary=summary)

    def _tool_finished(self, call_id: str, item: dict[str, Any]) -> ToolFinished:
        tool, summary = self._tools.finish(call_id) or ("tool", "Used a tool")
        exit_code = as_int(item.get("exit_code"))
        ok = item.get("status") in ("completed", None) and exit_code in (0, None)
        detail = ""
        if not ok:
            output = first_string(item, ["aggregated_output"]) or first_string(item.get("error"), ["message"])
            detail = shorten(strip_ansi(output or f"exit code {exit_code}"), DETAIL_LIMIT)
        return ToolFinished(call_id=call_id, tool=tool, summary=summary, ok=ok, detail=detail)


def describe_item(item: dict[str, Any], workspace: str | None) -> tuple[str, str]:
    """(tool, plain summary) of a Codex item that is a step, e.g. ("shell", "Ran `ls`")."""
    kind = str(item.get("type") or "tool")
    if kind == "command_execution":
        command = first_string(item, ["command"])
        return "shell", f"Ran {as_code(shell_command(command))}" if command else "Ran a command"
    if kind == "file_change":
        changes = item.get("changes")
        paths = [c.get("path") for c in changes if isinstance(c, dict)] if isinstance(changes, list) else []
        first = next((p for p in paths if isinstance(p, str)), "")
        return "file_change", describe.file_action("Edited", ["path"])({"path": first}, workspace)
    if kind == "mcp_tool_call":
        name = ".".join(p for p in (first_string(item, ["server"]), first_string(item, ["tool"])) if p)
        return "mcp_tool_call", describe.mcp_tool(["name"])({"name": name}, workspace)
    if kind == "web_search":
        return "web_search", describe.web_search(["query"])(item, workspace)
    if kind == "todo_list":
        return "todo_list", describe.TODOS(item, workspace)
    return kind, f"Used {kind}"


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    usage = Usage(
        input_tokens=as_int(raw.get("input_tokens")),
        output_tokens=as_int(raw.get("output_tokens")),
        cache_read_tokens=as_int(raw.get("cached_input_tokens")),
    )
    return usage if usage != Usage() else None
