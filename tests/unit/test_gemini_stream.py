"""GeminiStreamParser against sample ``gemini -p ... -o stream-json`` output.

The sample lines follow the event shapes in google-gemini/gemini-cli:
- packages/core/src/output/types.ts (JsonStreamEvent: init, message, tool_use,
  tool_result, error, result + StreamStats),
- packages/cli/src/nonInteractiveCli.ts (assistant text as ``delta: true`` messages,
  tool_result after each tool, ``result`` ending the run),
- packages/cli/src/utils/errors.ts (fatal errors as ``result`` with ``status: "error"``),
- packages/core/src/tools/definitions/base-declarations.ts (tool and parameter names),
- packages/core/src/utils/errorParsing.ts (``[API Error: ...]`` texts on stderr).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

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
from sandbox.agents.failures import EGRESS_BLOCKED_MESSAGE
from sandbox.agents.gemini_stream import GeminiStreamParser

TS = "2025-11-25T03:27:51.000Z"
WS = "/workspace/repo"

SESSION = [
    {
        "type": "init",
        "timestamp": TS,
        "session_id": "c0ffee00-1234-4bcd-8def-000000000001",
        "model": "gemini-2.5-flash",
    },
    {"type": "message", "timestamp": TS, "role": "user", "content": "How does retry work?"},
    {
        "type": "message",
        "timestamp": TS,
        "role": "assistant",
        "content": "I'll look at ",
        "delta": True,
    },
    {
        "type": "message",
        "timestamp": TS,
        "role": "assistant",
        "content": "the client.",
        "delta": True,
    },
    {
        "type": "tool_use",
        "timestamp": TS,
        "tool_name": "read_file",
        "tool_id": "read_file-1764041271000-a1b2c3",
        "parameters": {"file_path": f"{WS}/src/client.py"},
    },
    {
        "type": "tool_use",
        "timestamp": TS,
        "tool_name": "search_file_content",
        "tool_id": "search_file_content-1764041271001-d4e5f6",
        "parameters": {"pattern": "retry", "path": f"{WS}/src"},
    },
    {
        "type": "tool_result",
        "timestamp": TS,
        "tool_id": "read_file-1764041271000-a1b2c3",
        "status": "success",
        "output": "",
    },
    {
        "type": "tool_result",
        "timestamp": TS,
        "tool_id": "search_file_content-1764041271001-d4e5f6",
        "status": "error",
        "error": {
            "type": "invalid_tool_params",
            "message": "Path does not exist: /workspace/repo/src",
        },
    },
    {
        "type": "message",
        "timestamp": TS,
        "role": "assistant",
        "content": "Retries use ",
        "delta": True,
    },
    {
        "type": "message",
        "timestamp": TS,
        "role": "assistant",
        "content": "exponential backoff.",
        "delta": True,
    },
    {
        "type": "result",
        "timestamp": TS,
        "status": "success",
        "stats": {
            "total_tokens": 1500,
            "input_tokens": 1200,
            "output_tokens": 300,
            "cached": 800,
            "input": 400,
            "duration_ms": 4321,
            "tool_calls": 2,
        },
    },
]


def lines(events: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(e) + "\n" for e in events]


def run(events: list[dict[str, Any]], parser: GeminiStreamParser | None = None) -> list[AgentEvent]:
    parser = parser or GeminiStreamParser(workspace=WS)
    out: list[AgentEvent] = []
    for line in lines(events):
        out += parser.feed(line)
    return out


def only(events: list[AgentEvent], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def answer(events: list[AgentEvent]) -> str:
    return "".join(e.text for e in only(events, TextDelta))


# --- a whole session -----------------------------------------------------------------


def test_whole_session() -> None:
    parser = GeminiStreamParser(workspace=WS)
    events = run(SESSION, parser)
    assert events == [
        Started(session_id="c0ffee00-1234-4bcd-8def-000000000001", model="gemini-2.5-flash"),
        TextDelta(text="I'll look at "),
        TextDelta(text="the client."),
        ToolStarted(call_id="read_file-1764041271000-a1b2c3", tool="read_file", summary="Read src/client.py"),
        ToolStarted(
            call_id="search_file_content-1764041271001-d4e5f6",
            tool="search_file_content",
            summary="Searched for 'retry' in src",
        ),
        ToolFinished(
            call_id="read_file-1764041271000-a1b2c3",
            tool="read_file",
            summary="Read src/client.py",
            ok=True,
        ),
        ToolFinished(
            call_id="search_file_content-1764041271001-d4e5f6",
            tool="search_file_content",
            summary="Searched for 'retry' in src",
            ok=False,
            detail="Path does not exist: /workspace/repo/src",
        ),
        TextDelta(text="Retries use "),
        TextDelta(text="exponential backoff."),
        Result(
            text="I'll look at the client.Retries use exponential backoff.",
            duration_ms=4321,
            usage=Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=800),
        ),
    ]
    assert parser.done
    assert parser.finish(0, "") == []


def test_result_text_is_the_joined_deltas() -> None:
    events = run(SESSION)
    assert answer(events) == only(events, Result)[0].text


def test_user_message_is_not_answer_text() -> None:
    assert "How does retry work?" not in answer(run(SESSION))


def test_lines_after_the_result_are_ignored() -> None:
    parser = GeminiStreamParser()
    run(SESSION, parser)
    assert parser.feed(json.dumps(SESSION[2]) + "\n") == []


def test_result_without_stats() -> None:
    events = run([SESSION[0], SESSION[2], {"type": "result", "timestamp": TS, "status": "success"}])
    assert only(events, Result) == [Result(text="I'll look at ", duration_ms=None, usage=None)]


def test_a_non_delta_assistant_message_does_not_repeat_streamed_text() -> None:
    whole = {
        "type": "message",
        "timestamp": TS,
        "role": "assistant",
        "content": "I'll look at the client.",
    }
    events = run(
        [
            SESSION[0],
            SESSION[2],
            SESSION[3],
            whole,
            {"type": "result", "timestamp": TS, "status": "success"},
        ]
    )
    assert answer(events) == "I'll look at the client."


# --- tools -----------------------------------------------------------------------------

SUMMARIES = [
    ("read_file", {"file_path": f"{WS}/README.md"}, "Read README.md"),
    ("read_file", {"absolute_path": f"{WS}/docs/a.md"}, "Read docs/a.md"),
    ("list_directory", {"dir_path": f"{WS}/src"}, "Listed src"),
    ("list_directory", {"path": WS}, "Listed ."),
    ("glob", {"pattern": "**/*.ts"}, "Looked for files matching '**/*.ts'"),
    (
        "glob",
        {"pattern": "*.py", "dir_path": f"{WS}/tests"},
        "Looked for files matching '*.py' in tests",
    ),
    ("search_file_content", {"pattern": "TODO"}, "Searched for 'TODO'"),
    (
        "grep_search",
        {"pattern": "def main", "dir_path": f"{WS}/cli"},
        "Searched for 'def main' in cli",
    ),
    (
        "read_many_files",
        {"include": ["src/**/*.py", "README.md"]},
        "Read files matching src/**/*.py, README.md",
    ),
    ("read_many_files", {"paths": ["a", "b", "c", "d"]}, "Read files matching a, b, c, …"),
    ("run_shell_command", {"command": "ls -la", "description": "list"}, "Ran `ls -la`"),
    ("write_file", {"file_path": f"{WS}/out.txt", "content": "x"}, "Wrote out.txt"),
    ("replace", {"file_path": f"{WS}/a.py", "old_string": "a", "new_string": "b"}, "Edited a.py"),
    ("google_web_search", {"query": "gemini cli"}, "Searched the web for 'gemini cli'"),
    (
        "web_fetch",
        {"prompt": "Summarize https://example.com/page please"},
        "Fetched https://example.com/page",
    ),
    ("save_memory", {"fact": "x"}, "Saved a note to memory"),
    ("write_todos", {"todos": []}, "Updated the to-do list"),
    ("mcp_thing", {"x": 1}, "Used mcp_thing"),
]


@pytest.mark.parametrize(("tool", "params", "summary"), SUMMARIES, ids=[s[2] for s in SUMMARIES])
def test_tool_summaries(tool: str, params: dict[str, Any], summary: str) -> None:
    event = {
        "type": "tool_use",
        "timestamp": TS,
        "tool_name": tool,
        "tool_id": "t1",
        "parameters": params,
    }
    assert run([event]) == [ToolStarted(call_id="t1", tool=tool, summary=summary)]


def test_tool_error_without_message_uses_output() -> None:
    use = {
        "type": "tool_use",
        "timestamp": TS,
        "tool_name": "run_shell_command",
        "tool_id": "t1",
        "parameters": {"command": "make"},
    }
    res = {
        "type": "tool_result",
        "timestamp": TS,
        "tool_id": "t1",
        "status": "error",
        "output": "make: *** No targets.",
    }
    finished = only(run([use, res]), ToolFinished)
    assert finished == [
        ToolFinished(
            call_id="t1",
            tool="run_shell_command",
            summary="Ran `make`",
            ok=False,
            detail="make: *** No targets.",
        )
    ]


# --- errors ----------------------------------------------------------------------------


def test_error_result_becomes_an_agent_error() -> None:
    # handleError() in packages/cli/src/utils/errors.ts, a 429 formatted by errorParsing.ts
    message = (
        "[API Error: You exceeded your current quota, please check your plan and billing details. "
        "(Status: RESOURCE_EXHAUSTED)]\nPlease wait and try again later."
    )
    result = {
        "type": "result",
        "timestamp": TS,
        "status": "error",
        "error": {"type": "Error", "message": message},
        "stats": {
            "total_tokens": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cached": 0,
            "input": 0,
            "duration_ms": 0,
            "tool_calls": 0,
        },
    }
    parser = GeminiStreamParser()
    events = run([SESSION[0], result], parser)
    errors = only(events, AgentError)
    assert len(errors) == 1 and errors[0].kind is ErrorKind.QUOTA
    assert "RESOURCE_EXHAUSTED" in errors[0].message
    assert not only(events, Result)
    assert parser.done and parser.finish(1, "") == []


def test_error_event_is_a_diagnostic_and_names_a_bare_error_result() -> None:
    # nonInteractiveCli.ts: an invalid stream emits an error event, then a result with
    # status "error" and no error object
    invalid = "The model returned an empty text response. If your context window is near capacity, try using /compress."
    events = run(
        [
            SESSION[0],
            {"type": "error", "timestamp": TS, "severity": "error", "message": invalid},
            {"type": "result", "timestamp": TS, "status": "error", "stats": {"duration_ms": 10}},
        ]
    )
    assert only(events, Diagnostic) == [Diagnostic(text=f"Gemini CLI error: {invalid}")]
    assert only(events, AgentError) == [AgentError(kind=ErrorKind.AGENT, message=f"Gemini CLI failed: {invalid}")]


def test_warning_event_does_not_end_the_run() -> None:
    parser = GeminiStreamParser()
    events = run(
        [
            {
                "type": "error",
                "timestamp": TS,
                "severity": "warning",
                "message": "Loop detected, stopping execution",
            }
        ],
        parser,
    )
    assert events == [Diagnostic(text="Gemini CLI warning: Loop detected, stopping execution")]
    assert not parser.done


def test_error_result_with_egress_failure() -> None:
    result = {
        "type": "result",
        "timestamp": TS,
        "status": "error",
        "error": {"type": "Error", "message": "[API Error: fetch failed]"},
    }
    assert only(run([result]), AgentError) == [
        AgentError(kind=ErrorKind.EGRESS_BLOCKED, message=EGRESS_BLOCKED_MESSAGE)
    ]


STDERR_CASES = [
    (
        "When using Gemini API, you must specify the GEMINI_API_KEY environment variable.\n"
        "Update your environment and try again (no reload needed if using .env)!",
        41,
        ErrorKind.AUTH,
        "GEMINI_API_KEY",
    ),
    (
        "[API Error: API key not valid. Please pass a valid API key. (Status: INVALID_ARGUMENT)]",
        1,
        ErrorKind.AUTH,
        "API key not valid",
    ),
    ("", 41, ErrorKind.AUTH, "GEMINI_API_KEY"),
    (
        "[API Error: Resource has been exhausted (e.g. check quota). (Status: RESOURCE_EXHAUSTED)]",
        1,
        ErrorKind.QUOTA,
        "quota",
    ),
    ("Error: got status: 429 Too Many Requests", 1, ErrorKind.QUOTA, "429"),
    (
        "[API Error: models/gemini-9-ultra is not found for API version v1beta, or is not supported "
        "for generateContent. Call ListModels to see the list of available models. (Status: NOT_FOUND)]",
        1,
        ErrorKind.BAD_MODEL,
        "gemini-9-ultra",
    ),
    (
        "Gemini CLI is not running in a trusted directory.",
        52,
        ErrorKind.UNTRUSTED_WORKSPACE,
        "untrusted folder",
    ),
    ("[API Error: fetch failed]", 1, ErrorKind.EGRESS_BLOCKED, EGRESS_BLOCKED_MESSAGE),
    (
        "Error: connect ECONNREFUSED 10.0.0.7:3128",
        1,
        ErrorKind.EGRESS_BLOCKED,
        EGRESS_BLOCKED_MESSAGE,
    ),
    (
        "Error: getaddrinfo ENOTFOUND generativelanguage.googleapis.com",
        1,
        ErrorKind.EGRESS_BLOCKED,
        EGRESS_BLOCKED_MESSAGE,
    ),
    (
        "Error: getaddrinfo EAI_AGAIN generativelanguage.googleapis.com",
        1,
        ErrorKind.EGRESS_BLOCKED,
        EGRESS_BLOCKED_MESSAGE,
    ),
    (
        "tunneling socket could not be established, statusCode=403",
        1,
        ErrorKind.EGRESS_BLOCKED,
        EGRESS_BLOCKED_MESSAGE,
    ),
    (
        "TypeError: fetch failed\n  cause: Proxy response (403) !== 200 when HTTP Tunneling",
        1,
        ErrorKind.EGRESS_BLOCKED,
        EGRESS_BLOCKED_MESSAGE,
    ),
    ("Reached max session turns for this session.", 53, ErrorKind.AGENT, "turn limit"),
    (
        "Something unexpected happened",
        1,
        ErrorKind.AGENT,
        "Gemini CLI exited with code 1: Something unexpected happened",
    ),
]


@pytest.mark.parametrize(
    ("stderr", "code", "kind", "expected"),
    STDERR_CASES,
    ids=[f"{c[2].value}-{i}" for i, c in enumerate(STDERR_CASES)],
)
def test_failure_without_result_is_classified(stderr: str, code: int, kind: ErrorKind, expected: str) -> None:
    parser = GeminiStreamParser()
    run([SESSION[0]], parser)
    events = parser.finish(code, stderr)
    assert len(events) == 1 and isinstance(events[0], AgentError)
    assert events[0].kind is kind
    assert expected in events[0].message
    if kind is ErrorKind.EGRESS_BLOCKED:
        assert events[0].message == EGRESS_BLOCKED_MESSAGE
    assert parser.finish(code, stderr) == []


def test_open_tool_calls_are_closed_when_the_process_dies() -> None:
    parser = GeminiStreamParser(workspace=WS)
    run([SESSION[0], SESSION[4]], parser)
    events = parser.finish(None, "")
    assert events[0] == ToolFinished(
        call_id="read_file-1764041271000-a1b2c3",
        tool="read_file",
        summary="Read src/client.py",
        ok=False,
        detail="interrupted",
    )
    assert events[1] == AgentError(kind=ErrorKind.AGENT, message="Gemini CLI failed without an answer")


# --- robustness ------------------------------------------------------------------------


def test_non_json_and_unknown_lines() -> None:
    parser = GeminiStreamParser()
    assert parser.feed("Loaded cached credentials.\n") == [Diagnostic(text="Loaded cached credentials.")]
    assert parser.feed('"just a string"\n') == [Diagnostic(text='"just a string"')]
    assert parser.feed(json.dumps({"type": "thought", "timestamp": TS, "content": "hmm"}) + "\n") == []
    assert parser.feed("   \n") == []
    assert not parser.done


def test_unknown_fields_are_ignored() -> None:
    init = SESSION[0] | {"cwd": "/x", "new_field": {"a": 1}}
    assert run([init]) == [Started(session_id=SESSION[0]["session_id"], model="gemini-2.5-flash")]


def test_error_result_classified_by_error_type() -> None:
    # errors.ts puts getErrorType(error) (the error class name) in error.type
    result = {
        "type": "result",
        "timestamp": TS,
        "status": "error",
        "error": {"type": "FatalAuthenticationError", "message": "Could not load credentials"},
    }
    errors = only(run([result]), AgentError)
    assert [e.kind for e in errors] == [ErrorKind.AUTH]
    assert "Could not load credentials" in errors[0].message
