"""Parser for ``cursor-agent -p --output-format stream-json [--stream-partial-output]``.

Event shapes, as recorded in ../shared/fixtures/cursor-stream/ and described by
Cursor's output-format reference:

- ``{"type":"system","subtype":"init","session_id","model","cwd",...}``
- ``{"type":"user",...}`` - the prompt echoed back
- ``{"type":"thinking","subtype":"delta"|"completed",...}`` - never part of the answer
- ``{"type":"assistant","message":{"content":[{"type":"text","text"}]},
  "session_id", ["model_call_id"], ["timestamp_ms"]}``
- ``{"type":"tool_call","subtype":"started"|"completed","call_id",
  "tool_call":{"<kind>ToolCall":{"args":{...},"result":{"<outcome>":{...}}}}}``
- ``{"type":"result","subtype":"success","is_error","duration_ms","result",["usage"]}``

Assistant text comes in three forms. Without ``--stream-partial-output`` each message
arrives once: before a tool call with ``model_call_id`` and ``timestamp_ms``, at the end
of the turn with neither. With it, the text is streamed as deltas (``timestamp_ms``, no
``model_call_id``) and every segment is then replayed whole, with ``model_call_id`` or
without ``timestamp_ms``. A replay is recognised by content (see ``AnswerBuffer``), not
by its fields alone, because in the first mode the same fields mark the only copy.
"""

from __future__ import annotations

import re
from typing import Any

from sandbox.agents import describe
from sandbox.agents.describe import Describer
from sandbox.agents.events import (
    AgentError,
    AgentEvent,
    ErrorKind,
    Result,
    Started,
    TextDelta,
    ToolFinished,
    ToolStarted,
    Usage,
)
from sandbox.agents.failures import AgentFailures, Rule, explained, fixed
from sandbox.agents.jsonlines import JsonLinesParser
from sandbox.agents.text import DETAIL_LIMIT, as_int, first_string, shorten, str_or_none

AGENT = "cursor-agent"

_RULES: list[Rule] = [
    (
        ErrorKind.AUTH,
        re.compile(
            r"Authentication required|CURSOR_API_KEY|agent login|not authenticated"
            r"|invalid api key|unauthori[sz]ed",
            re.IGNORECASE,
        ),
    ),
    (ErrorKind.QUOTA, re.compile(r"usage limit|rate limit|quota", re.IGNORECASE)),
    (
        ErrorKind.BAD_MODEL,
        re.compile(r"Cannot use this model|Named models unavailable", re.IGNORECASE),
    ),
    (ErrorKind.UNTRUSTED_WORKSPACE, re.compile(r"Workspace Trust Required", re.IGNORECASE)),
]

_BAD_MODEL = re.compile(
    r"Cannot use this model:?\s*(?P<model>[^\s.]+(?:\.[^\s.]+)*)?\.?"
    r"(?:\s*Available models:\s*(?P<available>[^\n]+))?",
    re.IGNORECASE,
)


def _bad_model_message(text: str) -> str:
    """Which model cursor-agent refused, and the ones it offers, from its own words."""
    match = _BAD_MODEL.search(text)
    model = match.group("model") if match else None
    available = match.group("available") if match else None
    subject = f"the model {model}" if model else "the requested model"
    message = f"{AGENT} cannot use {subject}"
    if available:
        message += f". Available models: {available.strip().rstrip('.')}"
    return message


FAILURES = AgentFailures(
    agent=AGENT,
    rules=_RULES,
    explanations={
        ErrorKind.AUTH: explained("Cursor authentication failed: CURSOR_API_KEY is missing or not accepted"),
        ErrorKind.QUOTA: explained("The Cursor account has hit its usage limit"),
        ErrorKind.BAD_MODEL: _bad_model_message,
        ErrorKind.UNTRUSTED_WORKSPACE: fixed(
            f"{AGENT} refused to work in the folder (Workspace Trust Required); it must run with --trust"
        ),
    },
    ended=AGENT,
    no_answer=f"{AGENT} gave no answer",
)


def failure_from_stderr(exit_code: int | None, stderr_tail: str) -> AgentError:
    """The error for a run that ended without a result event."""
    return FAILURES.from_stderr(exit_code, stderr_tail)


# Keys that sit next to the ``<kind>ToolCall`` key in newer CLIs and are not the tool.
_TOOL_CALL_METADATA = {
    "toolCallId",
    "startedAtMs",
    "completedAtMs",
    "result",
    "hookAdditionalContexts",
}


class CursorStreamParser(JsonLinesParser):
    """Stateful: one instance per run. ``workspace`` is the folder the agent works in,
    used to shorten paths in tool summaries (default: the ``cwd`` cursor reports)."""

    failures = FAILURES

    def __init__(self, workspace: str | None = None) -> None:
        super().__init__(workspace)
        self._session_id: str | None = None
        self._anonymous_calls = 0
        self._handlers = {
            "system": self._on_system,
            "assistant": self._on_assistant,
            "tool_call": self._on_tool_call,
            "result": self._on_result,
        }

    # ``done``: cursor-agent sometimes keeps running after its result, so the caller
    # stops the container once it is set instead of waiting for an exit.

    # --- event handlers ----------------------------------------------------------

    def _on_system(self, event: dict[str, Any]) -> list[AgentEvent]:
        if event.get("subtype") != "init" or self._session_id is not None:
            return []  # a second init belongs to a sub-agent, not to this run
        self._session_id = str_or_none(event.get("session_id"))
        if self._workspace is None:
            self._workspace = str_or_none(event.get("cwd"))
        return [Started(session_id=self._session_id, model=str_or_none(event.get("model")))]

    def _on_assistant(self, event: dict[str, Any]) -> list[AgentEvent]:
        if self._from_sub_agent(event):
            return []  # a sub-agent's words are its report to the main agent, not the answer
        text = _message_text(event.get("message"))
        if not text:
            return []
        is_delta = "timestamp_ms" in event and "model_call_id" not in event
        new = self._answer.add_delta(text) if is_delta else self._answer.add_snapshot(text)
        return [TextDelta(text=new)] if new else []

    def _on_tool_call(self, event: dict[str, Any]) -> list[AgentEvent]:
        subtype = event.get("subtype")
        if subtype == "started":
            return [self._tool_started(event)]
        if subtype == "completed":
            return [self._tool_finished(event)]
        return []

    def _on_result(self, event: dict[str, Any]) -> list[AgentEvent]:
        self._done = True
        text = event.get("result")
        if event.get("is_error") or event.get("subtype", "success") != "success":
            message = text if isinstance(text, str) and text.strip() else "cursor-agent reported an error"
            kind = FAILURES.classify(message)
            return [AgentError(kind=kind, message=FAILURES.message(kind, message, None))]
        if not isinstance(text, str) or (not text and self._answer.text):
            text = self._answer.text  # no usable result text: fall back to what streamed
        return [
            Result(
                text=text,
                duration_ms=as_int(event.get("duration_ms")),
                usage=_usage(event.get("usage")),
            )
        ]

    # --- tools -------------------------------------------------------------------

    def _tool_started(self, event: dict[str, Any]) -> ToolStarted:
        self._answer.end_segment()
        tool, summary = describe_tool_call(event.get("tool_call"), self._workspace)
        call_id = self._call_id(event)
        self._tools.start(call_id, tool, summary)
        return ToolStarted(call_id=call_id, tool=tool, summary=summary)

    def _tool_finished(self, event: dict[str, Any]) -> ToolFinished:
        call_id = str_or_none(event.get("call_id")) or _args_call_id(event.get("tool_call"))
        call_id = call_id or self._tools.oldest_open() or self._new_anonymous_id()  # no id: the oldest open call
        # the started event's words, so a progress display can match the two up
        known = self._tools.finish(call_id)
        tool, summary = known or describe_tool_call(event.get("tool_call"), self._workspace)
        ok, detail = tool_outcome(event.get("tool_call"))
        return ToolFinished(call_id=call_id, tool=tool, summary=summary, ok=ok, detail=detail)

    def _call_id(self, event: dict[str, Any]) -> str:
        # call_id may contain a newline ("call_x\nfc_y"): it is an opaque key, kept as is
        return str_or_none(event.get("call_id")) or _args_call_id(event.get("tool_call")) or self._new_anonymous_id()

    def _new_anonymous_id(self) -> str:
        self._anonymous_calls += 1
        return f"call-{self._anonymous_calls}"

    def _from_sub_agent(self, event: dict[str, Any]) -> bool:
        session = event.get("session_id")
        return bool(self._session_id and isinstance(session, str) and session != self._session_id)


# --- tool descriptions ---------------------------------------------------------------


def describe_tool_call(tool_call: object, workspace: str | None) -> tuple[str, str]:
    """(tool name, plain summary) for a ``tool_call`` payload."""
    if not isinstance(tool_call, dict):
        return "tool", "Used a tool"
    function = tool_call.get("function")
    if isinstance(function, dict):  # MCP and generic tools
        name = first_string(function, ["name"]) or "tool"
        return name, f"Called {name}"
    key = _tool_kind_key(tool_call)
    if key is None:
        return "tool", "Used a tool"
    body = tool_call[key]
    args = body.get("args") if isinstance(body, dict) else None
    args = args if isinstance(args, dict) else {}
    tool = key.removesuffix("ToolCall") or key
    return tool, describe.summary(_DESCRIBERS.get(key), tool, args, workspace)


def _tool_kind_key(tool_call: dict[str, Any]) -> str | None:
    keys = [k for k in tool_call if k not in _TOOL_CALL_METADATA and isinstance(tool_call[k], dict)]
    named = [k for k in keys if k.endswith("ToolCall")]
    if named:
        return named[0]
    return keys[0] if keys else None


_PATH_KEYS = ("path", "filePath", "targetFile")
_FOLDER_KEYS = ("path", "targetDirectory")

_DESCRIBERS: dict[str, Describer] = {
    "readToolCall": describe.read(_PATH_KEYS),
    "shellToolCall": describe.shell(),
    "bashToolCall": describe.shell(),
    "grepToolCall": describe.grep(["pattern", "query"], _FOLDER_KEYS),
    "globToolCall": describe.glob(["globPattern", "pattern"], ["targetDirectory", "path"]),
    "lsToolCall": describe.listing(_FOLDER_KEYS, trailing_slash=True),
    "listDirToolCall": describe.listing(_FOLDER_KEYS, trailing_slash=True),
    "editToolCall": describe.file_action("Edited", _PATH_KEYS),
    "strReplaceToolCall": describe.file_action("Edited", _PATH_KEYS),
    "writeToolCall": describe.file_action("Wrote", _PATH_KEYS),
    "deleteToolCall": describe.file_action("Deleted", _PATH_KEYS),
    "semSearchToolCall": describe.semantic_search(["query", "explanation"]),
    "webSearchToolCall": describe.web_search(["searchTerm", "query"]),
    "webFetchToolCall": describe.web_fetch(["url"]),
    "todoToolCall": describe.TODOS,
    "updateTodosToolCall": describe.TODOS,
    "taskToolCall": describe.sub_agent(["description", "prompt"]),
    "mcpToolCall": describe.mcp_tool(["toolName", "name"]),
}


def tool_outcome(tool_call: object) -> tuple[bool, str]:
    """(ok, detail) from a completed call's ``result``: exactly one outcome key among
    success, failure, error, timeout, rejected, permissionDenied (others: not ok)."""
    result = _tool_result(tool_call)
    if result is None:
        return True, ""  # nothing says it failed
    outcome = next((k for k in result if k != "isBackground" and k in _OUTCOMES), None)
    if outcome is None:
        outcome = next((k for k in result if isinstance(result[k], dict)), None)
    if outcome is None:
        return True, ""
    if outcome == "success":
        return True, ""
    label = _OUTCOMES.get(outcome, outcome)
    reason = _outcome_reason(result.get(outcome))
    return False, shorten(f"{label}: {reason}" if reason else label, DETAIL_LIMIT)


_OUTCOMES = {
    "success": "succeeded",
    "failure": "failed",
    "error": "error",
    "timeout": "timed out",
    "rejected": "rejected",
    "permissionDenied": "permission denied",
}


def _tool_result(tool_call: object) -> dict[str, Any] | None:
    if not isinstance(tool_call, dict):
        return None
    candidates = [tool_call.get("result")] + [
        body.get("result")
        for key, body in tool_call.items()
        if key not in _TOOL_CALL_METADATA and isinstance(body, dict)
    ]
    found: dict[str, Any] | None = next((c for c in candidates if isinstance(c, dict)), None)
    return found


def _outcome_reason(body: object) -> str:
    if isinstance(body, str):
        return body.strip()
    if not isinstance(body, dict):
        return ""
    reason = first_string(body, ["reason", "errorMessage", "message", "error", "stderr"])
    if not reason and isinstance(body.get("error"), dict):
        reason = first_string(body["error"], ["message", "errorMessage", "error"])
    exit_code = as_int(body.get("exitCode"))
    if exit_code not in (None, 0):
        reason = f"exit code {exit_code}" + (f", {reason.strip()}" if reason else "")
    return reason.strip()


# --- small readers -------------------------------------------------------------------


def _message_text(message: object) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(
        part["text"]
        for part in content
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
    )


def _usage(data: object) -> Usage | None:
    if not isinstance(data, dict):
        return None
    usage = Usage(
        input_tokens=as_int(data.get("inputTokens", data.get("input_tokens"))),
        output_tokens=as_int(data.get("outputTokens", data.get("output_tokens"))),
        cache_read_tokens=as_int(data.get("cacheReadTokens", data.get("cache_read_tokens"))),
        cache_write_tokens=as_int(data.get("cacheWriteTokens", data.get("cache_write_tokens"))),
    )
    return usage if usage != Usage() else None


def _args_call_id(tool_call: object) -> str | None:
    if not isinstance(tool_call, dict):
        return None
    for body in tool_call.values():
        if isinstance(body, dict) and isinstance(body.get("args"), dict):
            found = str_or_none(body["args"].get("toolCallId"))
            if found:
                return found
    return None
