"""Parser for Claude Code's ``claude -p --output-format stream-json --verbose
--include-partial-messages`` output.

Event shapes, as recorded from Claude Code 2.1 against the fake Anthropic API in
tests/fixtures/claude-stream/ (tests/fixtures/record_agent_streams.py):

- ``{"type":"system","subtype":"init","session_id","model","cwd","tools",...}``;
  ``{"type":"system","subtype":"api_retry","attempt","error_status","error"}`` before a
  retry; other system subtypes (``status``, hooks) carry nothing for us;
- ``{"type":"stream_event","event":{...},"parent_tool_use_id"}``: the raw Messages API
  stream events; ``content_block_delta`` with a ``text_delta`` is the answer as written;
- ``{"type":"assistant","message":{"content":[{"type":"text"|"tool_use"|"thinking",...}]}}``:
  each content block once more, whole (a recap of streamed text, or a tool call with its
  ``id``, ``name`` and ``input``); an API failure is an assistant event with ``error``;
- ``{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id","content",
  "is_error"}]}}``: a tool's result;
- ``{"type":"result","subtype","is_error","result","duration_ms","usage",
  "api_error_status","terminal_reason"}``: the end. A failed run's ``result`` is Claude
  Code's own line ("Invalid API key · Fix external API key", "API Error: Request rejected
  (429) ...", "Prompt is too long ...") and ``api_error_status`` the HTTP status.

Events of a sub-agent (``parent_tool_use_id`` set) are not the answer and are skipped.
"""

from __future__ import annotations

import re
from typing import Any

from sandbox.agents import describe
from sandbox.agents.describe import Describer
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
from sandbox.agents.text import DETAIL_LIMIT, as_int, first_string, shorten, str_or_none, strip_ansi

AGENT = "Claude Code"

_RULES: list[Rule] = [
    (
        ErrorKind.AUTH,
        re.compile(
            r"Invalid API key|authentication_(?:failed|error)|ANTHROPIC_API_KEY|\b401\b"
            r"|Fix external API key|not logged in",
            re.IGNORECASE,
        ),
    ),
    (ErrorKind.QUOTA, re.compile(r"\b429\b|rate[ _]limit|usage limit|quota|credit balance|overloaded", re.IGNORECASE)),
    (
        ErrorKind.CONTEXT_OVERFLOW,
        re.compile(r"prompt is too long|prompt_too_long|context window|context length", re.IGNORECASE),
    ),
    (
        ErrorKind.BAD_MODEL,
        re.compile(
            r"issue with the selected model|model_not_found|not_found_error|\b404\b"
            r"|unknown model|invalid model",
            re.IGNORECASE,
        ),
    ),
]
_BY_STATUS = {
    401: ErrorKind.AUTH,
    403: ErrorKind.AUTH,
    429: ErrorKind.QUOTA,
    404: ErrorKind.BAD_MODEL,
    413: ErrorKind.CONTEXT_OVERFLOW,
}

FAILURES = AgentFailures(
    agent=AGENT,
    rules=_RULES,
    explanations={
        ErrorKind.AUTH: explained("The Anthropic API key is missing or was rejected"),
        ErrorKind.QUOTA: explained("The Anthropic API's rate limit or usage limit is exhausted"),
        ErrorKind.BAD_MODEL: explained("The Claude model is not available"),
        ErrorKind.CONTEXT_OVERFLOW: explained(
            "The conversation no longer fits the model's context window; start a new thread"
        ),
    },
    ended=f"{AGENT} failed",
    no_answer=f"{AGENT} failed without an answer",
)


def failure_from_stderr(exit_code: int | None, stderr_tail: str) -> AgentError:
    """The error for a run that ended without a result event."""
    return FAILURES.from_stderr(exit_code, stderr_tail)


class ClaudeStreamParser(JsonLinesParser):
    """Stateful: one instance per run. ``workspace`` is the folder the agent works in,
    used to shorten the absolute paths Claude Code's tools take."""

    failures = FAILURES

    def __init__(self, workspace: str | None = None) -> None:
        super().__init__(workspace)
        self._handlers = {
            "system": self._on_system,
            "stream_event": self._on_stream_event,
            "assistant": self._on_assistant,
            "user": self._on_user,
            "result": self._on_result,
        }

    # --- event handlers ----------------------------------------------------------

    def _on_system(self, event: dict[str, Any]) -> list[AgentEvent]:
        subtype = event.get("subtype")
        if subtype == "init":
            return [Started(session_id=str_or_none(event.get("session_id")), model=str_or_none(event.get("model")))]
        if subtype == "api_retry":
            status = event.get("error_status")
            return [
                Diagnostic(
                    text=f"{AGENT} retrying after {status or 'an error'} "
                    f"({event.get('error') or 'unknown'}), attempt {event.get('attempt')}"
                )
            ]
        return []

    def _on_stream_event(self, event: dict[str, Any]) -> list[AgentEvent]:
        inner = event.get("event")
        if event.get("parent_tool_use_id") or not isinstance(inner, dict):
            return []
        delta = inner.get("delta")
        if inner.get("type") == "content_block_delta" and isinstance(delta, dict) and delta.get("type") == "text_delta":
            text = delta.get("text")
            if isinstance(text, str) and text:
                return [TextDelta(text=self._answer.add_delta(text))]
        return []

    def _on_assistant(self, event: dict[str, Any]) -> list[AgentEvent]:
        message = event.get("message")
        if event.get("parent_tool_use_id") or event.get("error") or not isinstance(message, dict):
            return []  # a sub-agent's step, or an API failure the result will explain
        events: list[AgentEvent] = []
        for block in message.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                new = self._answer.add_snapshot(block["text"])  # a recap of streamed text
                if new:
                    events.append(TextDelta(text=new))
            elif block.get("type") == "tool_use":
                events.append(self._tool_started(block))
        return events

    def _on_user(self, event: dict[str, Any]) -> list[AgentEvent]:
        message = event.get("message")
        if event.get("parent_tool_use_id") or not isinstance(message, dict):
            return []
        content = message.get("content")
        events: list[AgentEvent] = []
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                events.append(self._tool_finished(block))
        return events

    def _on_result(self, event: dict[str, Any]) -> list[AgentEvent]:
        self._done = True
        text = event.get("result")
        if event.get("is_error") or event.get("subtype", "success") != "success":
            return [*self._interrupted(), self._error(event)]
        answer = self._answer.text or (text if isinstance(text, str) else "")
        return [Result(text=answer, duration_ms=as_int(event.get("duration_ms")), usage=_usage(event.get("usage")))]

    def _error(self, event: dict[str, Any]) -> AgentError:
        text = first_string(event, ["result"]) or f"{AGENT} ended with {event.get('subtype') or 'an error'}"
        status = as_int(event.get("api_error_status"))
        kind = ErrorKind.CONTEXT_OVERFLOW if event.get("terminal_reason") == "prompt_too_long" else None
        kind = kind or (_BY_STATUS.get(status) if status is not None else None) or FAILURES.classify(text)
        return AgentError(kind=kind, message=FAILURES.message(kind, strip_ansi(text), None))

    # --- tools -------------------------------------------------------------------

    def _tool_started(self, block: dict[str, Any]) -> ToolStarted:
        self._answer.end_segment()
        tool = str_or_none(block.get("name")) or "tool"
        call_id = str_or_none(block.get("id")) or f"{tool}-{len(self._tools) + 1}"
        args = block.get("input")
        summary = describe_tool(tool, args if isinstance(args, dict) else {}, self._workspace)
        self._tools.start(call_id, tool, summary)
        return ToolStarted(call_id=call_id, tool=tool, summary=summary)

    def _tool_finished(self, block: dict[str, Any]) -> ToolFinished:
        call_id = str_or_none(block.get("tool_use_id")) or self._tools.oldest_open() or "unknown"
        tool, summary = self._tools.finish(call_id) or ("tool", "Used a tool")
        ok = block.get("is_error") is not True
        detail = "" if ok else shorten(strip_ansi(_content_text(block.get("content")) or "failed"), DETAIL_LIMIT)
        return ToolFinished(call_id=call_id, tool=tool, summary=summary, ok=ok, detail=detail)


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return re.sub(r"</?tool_use_error>", "", content)
    if isinstance(content, list):
        return " ".join(c.get("text", "") for c in content if isinstance(c, dict) and isinstance(c.get("text"), str))
    return ""


# --- tool descriptions ---------------------------------------------------------------

_PATH_KEYS = ("file_path", "path", "notebook_path")


def describe_tool(tool: str, args: dict[str, Any], workspace: str | None) -> str:
    """Plain summary for a Claude Code tool call, e.g. "Read README.md"."""
    return describe.summary(_DESCRIBERS.get(tool), tool, args, workspace)


_DESCRIBERS: dict[str, Describer] = {
    "Read": describe.read(_PATH_KEYS),
    "Bash": describe.shell(("command",)),
    "Grep": describe.grep(["pattern"], ["path"]),
    "Glob": describe.glob(["pattern"], ["path"]),
    "LS": describe.listing(["path"]),
    "Edit": describe.file_action("Edited", _PATH_KEYS),
    "MultiEdit": describe.file_action("Edited", _PATH_KEYS),
    "Write": describe.file_action("Wrote", _PATH_KEYS),
    "NotebookEdit": describe.file_action("Edited", _PATH_KEYS),
    "WebFetch": describe.web_fetch(["url"]),
    "WebSearch": describe.web_search(["query"]),
    "Task": describe.sub_agent(["description"]),
    "Agent": describe.sub_agent(["description"]),
    "TodoWrite": describe.TODOS,
}


# --- small readers -------------------------------------------------------------------


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    usage = Usage(
        input_tokens=as_int(raw.get("input_tokens")),
        output_tokens=as_int(raw.get("output_tokens")),
        cache_read_tokens=as_int(raw.get("cache_read_input_tokens")),
        cache_write_tokens=as_int(raw.get("cache_creation_input_tokens")),
    )
    return usage if usage != Usage() else None
