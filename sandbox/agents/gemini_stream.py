"""Parser for the open-source Gemini CLI's ``gemini -p ... -o stream-json`` output.

Event shapes, from google-gemini/gemini-cli ``packages/core/src/output/types.ts``
(``JsonStreamEvent``) and where ``packages/cli/src/nonInteractiveCli.ts`` emits them;
every event also carries an ISO ``timestamp``:

- ``{"type":"init","session_id","model"}``
- ``{"type":"message","role":"user"|"assistant","content", "delta":true}`` - assistant
  text always arrives as deltas, one turn after another, with no separator
- ``{"type":"tool_use","tool_name","tool_id","parameters":{...}}``
- ``{"type":"tool_result","tool_id","status":"success"|"error","output"?,
  "error"?:{"type","message"}}``
- ``{"type":"error","severity":"warning"|"error","message"}`` - non-fatal
  (loop detected, turn limit, invalid stream); a ``result`` follows
- ``{"type":"result","status":"success"|"error","error"?:{"type","message"},
  "stats"?:{"total_tokens","input_tokens","output_tokens","cached","input",
  "duration_ms","tool_calls"}}``

The result carries no text: the answer is the assistant deltas joined. Older CLIs print
fatal errors (bad key, quota, unreachable API) only on stderr and exit without a
result; newer ones (``packages/cli/src/utils/errors.ts``) also emit a ``result`` with
``status: "error"``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sandbox.agents.common import (
    DETAIL_LIMIT,
    EGRESS_BLOCKED_MESSAGE,
    JsonLinesParser,
    Rule,
    as_code,
    as_int,
    classify,
    exit_phrase,
    first_string,
    quoted,
    relative_path,
    shorten,
    stderr_excerpt,
    strip_ansi,
    with_context,
)
from sandbox.events import (
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

AGENT = "Gemini CLI"

# Exit codes from the CLI's headless-mode reference (docs/cli/headless.md).
EXIT_AUTH = 41
EXIT_TURN_LIMIT = 53

_RULES: list[Rule] = [
    (
        ErrorKind.AUTH,
        re.compile(
            r"GEMINI_API_KEY|API key not valid|API_KEY_INVALID|API key expired"
            r"|UNAUTHENTICATED|PERMISSION_DENIED|\b401\b|AuthenticationError"
            r"|authentication (?:failed|error|required)",
            re.IGNORECASE,
        ),
    ),
    (
        ErrorKind.QUOTA,
        re.compile(
            r"\b429\b|RESOURCE_EXHAUSTED|quota|exhausted your capacity|rate limit", re.IGNORECASE
        ),
    ),
    (
        ErrorKind.BAD_MODEL,
        re.compile(
            r"NOT_FOUND|is not found for API version|not supported for generateContent"
            r"|model[^\n]{0,60}not found|\b404\b|unknown model|invalid model",
            re.IGNORECASE,
        ),
    ),
    (
        ErrorKind.UNTRUSTED_WORKSPACE,
        re.compile(r"trusted (?:directory|folder)|untrusted", re.IGNORECASE),
    ),
]


class GeminiStreamParser(JsonLinesParser):
    """Stateful: one instance per run. ``workspace`` is the folder the agent works in,
    used to shorten the absolute paths Gemini's tools take."""

    def __init__(self, workspace: str | None = None) -> None:
        super().__init__(workspace)
        self._calls: dict[str, tuple[str, str]] = {}  # tool_id -> (tool, summary)
        self._open: set[str] = set()
        self._last_error = ""  # an error event's message, for a result that names none
        self._handlers = {
            "init": self._on_init,
            "message": self._on_message,
            "tool_use": self._on_tool_use,
            "tool_result": self._on_tool_result,
            "error": self._on_error,
            "result": self._on_result,
        }

    def _interrupted(self) -> list[AgentEvent]:
        events: list[AgentEvent] = [self._interrupted_call(call_id) for call_id in sorted(self._open)]
        self._open.clear()
        return events

    def _failure(self, exit_code: int | None, stderr_tail: str) -> AgentEvent:
        return failure_from_stderr(exit_code, stderr_tail)

    # --- event handlers ----------------------------------------------------------

    def _on_init(self, event: dict[str, Any]) -> list[AgentEvent]:
        return [
            Started(
                session_id=_str_or_none(event.get("session_id")),
                model=_str_or_none(event.get("model")),
            )
        ]

    def _on_message(self, event: dict[str, Any]) -> list[AgentEvent]:
        content = event.get("content")
        if event.get("role") != "assistant" or not isinstance(content, str) or not content:
            return []  # the user message is the prompt echoed back
        if event.get("delta") is True:
            new = self._answer.add_delta(content)
        else:
            new = self._answer.add_snapshot(content)  # not emitted today; a whole message
        return [TextDelta(text=new)] if new else []

    def _on_tool_use(self, event: dict[str, Any]) -> list[AgentEvent]:
        self._answer.end_segment()
        tool = _str_or_none(event.get("tool_name")) or "tool"
        call_id = _str_or_none(event.get("tool_id")) or f"{tool}-{len(self._calls) + 1}"
        params = event.get("parameters")
        summary = describe_tool(tool, params if isinstance(params, dict) else {}, self._workspace)
        self._calls[call_id] = (tool, summary)
        self._open.add(call_id)
        return [ToolStarted(call_id=call_id, tool=tool, summary=summary)]

    def _on_tool_result(self, event: dict[str, Any]) -> list[AgentEvent]:
        call_id = _str_or_none(event.get("tool_id")) or "unknown"
        tool, summary = self._calls.get(call_id, ("tool", "Used a tool"))
        self._open.discard(call_id)
        ok = event.get("status") == "success"
        detail = "" if ok else _tool_error(event)
        return [ToolFinished(call_id=call_id, tool=tool, summary=summary, ok=ok, detail=detail)]

    def _on_error(self, event: dict[str, Any]) -> list[AgentEvent]:
        message = first_string(event, ["message"]) or "unknown error"
        severity = first_string(event, ["severity"]) or "error"
        if severity == "error":
            self._last_error = message
        return [Diagnostic(text=f"{AGENT} {severity}: {message}")]

    def _on_result(self, event: dict[str, Any]) -> list[AgentEvent]:
        self._done = True
        raw_stats, raw_error = event.get("stats"), event.get("error")
        stats: dict[str, Any] = raw_stats if isinstance(raw_stats, dict) else {}
        error: dict[str, Any] | None = raw_error if isinstance(raw_error, dict) else None
        if event.get("status") == "error" or (error and event.get("status") != "success"):
            return [self._result_error(error)]
        return [
            Result(
                text=self._answer.text,
                duration_ms=as_int(stats.get("duration_ms")),
                usage=_usage(stats),
            )
        ]

    def _result_error(self, error: dict[str, Any] | None) -> AgentError:
        message = first_string(error, ["message"]) or self._last_error or "the run failed"
        error_type = first_string(error, ["type"])
        kind = classify(f"{error_type} {message}", _RULES)
        return AgentError(kind=kind, message=_plain_message(kind, strip_ansi(message), None))

    def _interrupted_call(self, call_id: str) -> ToolFinished:
        tool, summary = self._calls[call_id]
        return ToolFinished(
            call_id=call_id, tool=tool, summary=summary, ok=False, detail="interrupted"
        )


# --- tool descriptions ---------------------------------------------------------------

_PATH_KEYS = ("file_path", "absolute_path", "path", "dir_path", "directory")


def describe_tool(tool: str, params: dict[str, Any], workspace: str | None) -> str:
    """Plain summary for a Gemini tool call, e.g. "Read README.md"."""
    describe = _DESCRIBERS.get(tool)
    summary = describe(params, workspace) if describe else ""
    return summary or f"Used {tool}"


def _path(params: dict[str, Any], ws: str | None, *keys: str) -> str:
    return relative_path(first_string(params, keys or _PATH_KEYS), ws)


def _read(params: dict[str, Any], ws: str | None) -> str:
    path = _path(params, ws)
    return f"Read {shorten(path)}" if path else "Read a file"


def _read_many(params: dict[str, Any], ws: str | None) -> str:
    items = params.get("include", params.get("paths"))
    names = (
        [relative_path(i, ws) for i in items if isinstance(i, str)]
        if isinstance(items, list)
        else []
    )
    if not names:
        return "Read several files"
    shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
    return f"Read files matching {shorten(shown, 60)}"


def _list(params: dict[str, Any], ws: str | None) -> str:
    path = _path(params, ws, "dir_path", "path", "directory") or "."
    return f"Listed {shorten(path)}"


def _glob(params: dict[str, Any], ws: str | None) -> str:
    pattern = first_string(params, ["pattern"])
    where = _path(params, ws, "dir_path", "path")
    text = f"Looked for files matching {quoted(pattern)}" if pattern else "Looked for files"
    return f"{text} in {shorten(where, 40)}" if where and where != "." else text


def _grep(params: dict[str, Any], ws: str | None) -> str:
    pattern = first_string(params, ["pattern", "query"])
    where = _path(params, ws, "dir_path", "path")
    text = f"Searched for {quoted(pattern)}" if pattern else "Searched the code"
    return f"{text} in {shorten(where, 40)}" if where and where != "." else text


def _shell(params: dict[str, Any], ws: str | None) -> str:
    command = first_string(params, ["command"])
    return f"Ran {as_code(command)}" if command else "Ran a command"


def _file_action(verb: str) -> Callable[[dict[str, Any], str | None], str]:
    def describe(params: dict[str, Any], ws: str | None) -> str:
        path = _path(params, ws)
        return f"{verb} {shorten(path)}" if path else f"{verb} a file"

    return describe


def _web_search(params: dict[str, Any], ws: str | None) -> str:
    query = first_string(params, ["query"])
    return f"Searched the web for {quoted(query)}" if query else "Searched the web"


_URL = re.compile(r"https?://\S+")


def _web_fetch(params: dict[str, Any], ws: str | None) -> str:
    url = _URL.search(first_string(params, ["url", "prompt"]))
    return f"Fetched {shorten(url.group(0))}" if url else "Fetched a web page"


def _fixed(text: str) -> Callable[[dict[str, Any], str | None], str]:
    return lambda params, ws: text


_DESCRIBERS: dict[str, Callable[[dict[str, Any], str | None], str]] = {
    "read_file": _read,
    "read_many_files": _read_many,
    "list_directory": _list,
    "glob": _glob,
    "search_file_content": _grep,
    "grep": _grep,
    "grep_search": _grep,
    "run_shell_command": _shell,
    "write_file": _file_action("Wrote"),
    "replace": _file_action("Edited"),
    "edit": _file_action("Edited"),
    "google_web_search": _web_search,
    "web_fetch": _web_fetch,
    "save_memory": _fixed("Saved a note to memory"),
    "write_todos": _fixed("Updated the to-do list"),
}


def _tool_error(event: dict[str, Any]) -> str:
    error = event.get("error")
    message = first_string(error, ["message"]) or first_string(event, ["output"]) or "failed"
    return shorten(strip_ansi(message), DETAIL_LIMIT)


# --- failures ------------------------------------------------------------------------


def failure_from_stderr(exit_code: int | None, stderr_tail: str) -> AgentError:
    """The error for a run that ended without a result event."""
    kind = classify(stderr_tail, _RULES)
    if kind is ErrorKind.AGENT and exit_code == EXIT_AUTH:
        kind = ErrorKind.AUTH
    return AgentError(kind=kind, message=_plain_message(kind, stderr_tail, exit_code))


def _plain_message(kind: ErrorKind, text: str, exit_code: int | None) -> str:
    match kind:
        case ErrorKind.EGRESS_BLOCKED:
            return EGRESS_BLOCKED_MESSAGE
        case ErrorKind.AUTH:
            return with_context(
                "The Gemini API key is missing or was rejected (GEMINI_API_KEY)", text
            )
        case ErrorKind.QUOTA:
            return with_context("The Gemini API quota or rate limit is exhausted", text)
        case ErrorKind.BAD_MODEL:
            return with_context("The Gemini model is not available", text)
        case ErrorKind.UNTRUSTED_WORKSPACE:
            return with_context("Gemini CLI refused to work in an untrusted folder", text)
        case _:
            if exit_code == EXIT_TURN_LIMIT:
                return with_context("Gemini CLI reached its turn limit before answering", text)
            ended = exit_phrase(AGENT, exit_code) if exit_code is not None else f"{AGENT} failed"
            excerpt = stderr_excerpt(text)
            if excerpt:
                return f"{ended}: {excerpt}"
            return f"{ended} without an answer"


# --- small readers -------------------------------------------------------------------


def _usage(stats: dict[str, Any]) -> Usage | None:
    usage = Usage(
        input_tokens=as_int(stats.get("input_tokens")),
        output_tokens=as_int(stats.get("output_tokens")),
        cache_read_tokens=as_int(stats.get("cached")),  # Gemini reports cache reads only
    )
    return usage if usage != Usage() else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
