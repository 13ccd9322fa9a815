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
        re.compile(r"\b429\b|RESOURCE_EXHAUSTED|quota|exhausted your capacity|rate limit", re.IGNORECASE),
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

FAILURES = AgentFailures(
    agent=AGENT,
    rules=_RULES,
    explanations={
        ErrorKind.AUTH: explained("The Gemini API key is missing or was rejected (GEMINI_API_KEY)"),
        ErrorKind.QUOTA: explained("The Gemini API quota or rate limit is exhausted"),
        ErrorKind.BAD_MODEL: explained("The Gemini model is not available"),
        ErrorKind.UNTRUSTED_WORKSPACE: explained("Gemini CLI refused to work in an untrusted folder"),
    },
    ended=f"{AGENT} failed",
    no_answer=f"{AGENT} failed without an answer",
    # exit 41 is the CLI's own "auth failed", whatever (if anything) it printed
    kind_by_exit_code={EXIT_AUTH: ErrorKind.AUTH},
    explanation_by_exit_code={EXIT_TURN_LIMIT: explained("Gemini CLI reached its turn limit before answering")},
)


def failure_from_stderr(exit_code: int | None, stderr_tail: str) -> AgentError:
    """The error for a run that ended without a result event."""
    return FAILURES.from_stderr(exit_code, stderr_tail)


class GeminiStreamParser(JsonLinesParser):
    """Stateful: one instance per run. ``workspace`` is the folder the agent works in,
    used to shorten the absolute paths Gemini's tools take."""

    failures = FAILURES

    def __init__(self, workspace: str | None = None) -> None:
        super().__init__(workspace)
        self._last_error = ""  # an error event's message, for a result that names none
        self._handlers = {
            "init": self._on_init,
            "message": self._on_message,
            "tool_use": self._on_tool_use,
            "tool_result": self._on_tool_result,
            "error": self._on_error,
            "result": self._on_result,
        }

    # --- event handlers ----------------------------------------------------------

    def _on_init(self, event: dict[str, Any]) -> list[AgentEvent]:
        return [
            Started(
                session_id=str_or_none(event.get("session_id")),
                model=str_or_none(event.get("model")),
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
        tool = str_or_none(event.get("tool_name")) or "tool"
        call_id = str_or_none(event.get("tool_id")) or f"{tool}-{len(self._tools) + 1}"
        params = event.get("parameters")
        summary = describe_tool(tool, params if isinstance(params, dict) else {}, self._workspace)
        self._tools.start(call_id, tool, summary)
        return [ToolStarted(call_id=call_id, tool=tool, summary=summary)]

    def _on_tool_result(self, event: dict[str, Any]) -> list[AgentEvent]:
        call_id = str_or_none(event.get("tool_id")) or "unknown"
        tool, summary = self._tools.finish(call_id) or ("tool", "Used a tool")
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
        kind = FAILURES.classify(f"{error_type} {message}")
        return AgentError(kind=kind, message=FAILURES.message(kind, strip_ansi(message), None))


# --- tool descriptions ---------------------------------------------------------------

_PATH_KEYS = ("file_path", "absolute_path", "path", "dir_path", "directory")
_FOLDER_KEYS = ("dir_path", "path")


def describe_tool(tool: str, params: dict[str, Any], workspace: str | None) -> str:
    """Plain summary for a Gemini tool call, e.g. "Read README.md"."""
    return describe.summary(_DESCRIBERS.get(tool), tool, params, workspace)


_DESCRIBERS: dict[str, Describer] = {
    "read_file": describe.read(_PATH_KEYS),
    "read_many_files": describe.read_many(["include", "paths"]),
    "list_directory": describe.listing(["dir_path", "path", "directory"]),
    "glob": describe.glob(["pattern"], _FOLDER_KEYS),
    "search_file_content": describe.grep(["pattern", "query"], _FOLDER_KEYS),
    "grep": describe.grep(["pattern", "query"], _FOLDER_KEYS),
    "grep_search": describe.grep(["pattern", "query"], _FOLDER_KEYS),
    "run_shell_command": describe.shell(),
    "write_file": describe.file_action("Wrote", _PATH_KEYS),
    "replace": describe.file_action("Edited", _PATH_KEYS),
    "edit": describe.file_action("Edited", _PATH_KEYS),
    "google_web_search": describe.web_search(["query"]),
    "web_fetch": describe.web_fetch(["url", "prompt"], url_in_text=True),
    "save_memory": describe.fixed("Saved a note to memory"),
    "write_todos": describe.TODOS,
}


def _tool_error(event: dict[str, Any]) -> str:
    error = event.get("error")
    message = first_string(error, ["message"]) or first_string(event, ["output"]) or "failed"
    return shorten(strip_ansi(message), DETAIL_LIMIT)


# --- small readers -------------------------------------------------------------------


def _usage(stats: dict[str, Any]) -> Usage | None:
    usage = Usage(
        input_tokens=as_int(stats.get("input_tokens")),
        output_tokens=as_int(stats.get("output_tokens")),
        cache_read_tokens=as_int(stats.get("cached")),  # Gemini reports cache reads only
    )
    return usage if usage != Usage() else None
