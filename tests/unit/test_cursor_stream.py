"""CursorStreamParser against real cursor-agent transcripts and recorded shapes.

Transcripts: tests/fixtures/cursor-stream/*.jsonl (copied from ../shared/fixtures) (reifying/cursor-hack, MIT), see
../shared/fixtures/README.md. Shapes not in those files (partial-output deltas, usage,
tool outcomes other than success, stderr failures) follow the README and the public
recordings it cites.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from sandbox.agents.cursor_stream import CursorStreamParser
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

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cursor-stream"
TRANSCRIPTS = sorted(FIXTURES.glob("*.jsonl"))
# full_session.jsonl is hand-trimmed test data: its result text ("done") is not the
# assistant texts joined, unlike the four real recordings.
RECORDED = [p for p in TRANSCRIPTS if p.name != "full_session.jsonl"]
SESSION = "0f6fa7cf-4483-4a6d-ab20-21fb703f6e97"


def test_fixtures_are_present() -> None:
    names = {p.name for p in TRANSCRIPTS}
    assert {"direct-sleep.jsonl", "full_session.jsonl", "parallel-sleep.jsonl"} <= names, FIXTURES


# --- helpers -------------------------------------------------------------------------


def run(lines: list[str], parser: CursorStreamParser | None = None) -> list[AgentEvent]:
    parser = parser or CursorStreamParser()
    events: list[AgentEvent] = []
    for line in lines:
        events += parser.feed(line)
    return events


def raw(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def dumps(events: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(e, ensure_ascii=False) + "\n" for e in events]


def answer(events: list[AgentEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def only(events: list[AgentEvent], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def the_result(events: list[AgentEvent]) -> Result:
    results = only(events, Result)
    assert len(results) == 1, events
    return results[0]


def result_line(path: Path) -> dict[str, Any]:
    return next(e for e in raw(path) if e["type"] == "result")


def assistant_texts(path: Path) -> list[str]:
    return [e["message"]["content"][0]["text"] for e in raw(path) if e["type"] == "assistant"]


def with_partial_output(
    events: list[dict[str, Any]], chunk: int = 7, whole_recap: bool = False
) -> list[dict[str, Any]]:
    """What ``--stream-partial-output`` makes of a transcript: each assistant text
    streamed as deltas (timestamp_ms, no model_call_id), then the original message as
    the recap. ``whole_recap``: the end-of-turn recap repeats the whole answer."""
    out: list[dict[str, Any]] = []
    so_far = ""
    for event in events:
        if event["type"] != "assistant":
            out.append(event)
            continue
        text = event["message"]["content"][0]["text"]
        for i in range(0, len(text), chunk):
            out.append(
                {
                    "type": "assistant",
                    "message": {
                        "role": "assistant",
                        "content": [{"type": "text", "text": text[i : i + chunk]}],
                    },
                    "session_id": event["session_id"],
                    "timestamp_ms": 1770823845000 + i,
                }
            )
        so_far += text
        recap = copy.deepcopy(event)
        if whole_recap and "model_call_id" not in event:
            recap["message"]["content"][0]["text"] = so_far
        out.append(recap)
    return out


def assistant(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "assistant",
        "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
        "session_id": SESSION,
        **extra,
    }


def init(cwd: str = "/home/user/project") -> dict[str, Any]:
    return {
        "type": "system",
        "subtype": "init",
        "apiKeySource": "env",
        "cwd": cwd,
        "session_id": SESSION,
        "model": "gpt-5",
        "permissionMode": "default",
    }


def result(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "result",
        "subtype": "success",
        "duration_ms": 1234,
        "duration_api_ms": 1234,
        "is_error": False,
        "result": text,
        "session_id": SESSION,
        **extra,
    }


def tool(
    subtype: str,
    call_id: str,
    kind: str,
    args: dict[str, Any],
    outcome: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"args": args}
    if outcome is not None:
        body["result"] = outcome
    return {
        "type": "tool_call",
        "subtype": subtype,
        "call_id": call_id,
        "tool_call": {kind: body},
        "model_call_id": "m-0",
        "session_id": SESSION,
        "timestamp_ms": 1770823849274,
    }


# --- the recorded transcripts --------------------------------------------------------


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.name)
def test_final_answer_is_the_result_text(path: Path) -> None:
    parser = CursorStreamParser()
    events = run(path.read_text().splitlines(keepends=True), parser)
    final = the_result(events)
    assert final.text == result_line(path)["result"]
    assert final.duration_ms == result_line(path)["duration_ms"]
    assert final.usage is None  # these recordings predate usage on the result
    assert parser.done
    assert isinstance(events[0], Started)
    assert events[-1] is final
    assert parser.finish(0, "") == []


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.name)
def test_streamed_text_equals_result_without_duplication(path: Path) -> None:
    events = run(path.read_text().splitlines())
    streamed = answer(events)
    assert streamed == the_result(events).text
    assert streamed == "".join(assistant_texts(path))  # each message exactly once


def test_full_session_streams_each_assistant_message_once() -> None:
    path = FIXTURES / "full_session.jsonl"
    events = run(path.read_text().splitlines())
    assert answer(events) == "".join(assistant_texts(path))
    assert the_result(events).text == "done"  # the result, not the stream, is the answer


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.name)
def test_thinking_never_reaches_the_answer(path: Path) -> None:
    events = run(path.read_text().splitlines())
    thinking = [e["text"] for e in raw(path) if e["type"] == "thinking" and e.get("text")]
    assert "**Planning" not in answer(events)
    if len(thinking) > 20:
        assert "".join(thinking) not in answer(events)


def test_started_carries_session_and_model() -> None:
    events = run((FIXTURES / "direct-sleep.jsonl").read_text().splitlines())
    assert events[0] == Started(session_id="d43015b9-0707-43f4-b2df-0bcea7891654", model="Auto")
    assert len(only(events, Started)) == 1


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.name)
def test_tool_calls_pair_by_call_id(path: Path) -> None:
    events = run(path.read_text().splitlines())
    started = only(events, ToolStarted)
    finished = only(events, ToolFinished)
    expected_ids = [e["call_id"] for e in raw(path) if e["type"] == "tool_call" and e["subtype"] == "started"]
    assert [s.call_id for s in started] == expected_ids
    assert sorted(f.call_id for f in finished) == sorted(expected_ids)
    by_id = {s.call_id: s for s in started}
    for done in finished:
        assert (done.tool, done.summary) == (by_id[done.call_id].tool, by_id[done.call_id].summary)
        assert done.ok and done.detail == ""


def test_call_ids_with_newlines_are_kept_whole() -> None:
    events = run((FIXTURES / "direct-sleep.jsonl").read_text().splitlines())
    first = only(events, ToolStarted)[0]
    assert first.call_id == ("call_PFAupCWibROFKbdASSdiHCoi\nfc_0d2609f619ccdca801698ca0a51c6481a0aaa34fcf724631a9")
    assert [s.summary for s in only(events, ToolStarted)] == ["Ran `sleep 5`", "Ran `sleep 3`"]
    assert {s.tool for s in only(events, ToolStarted)} == {"shell"}


def test_parallel_calls_complete_out_of_order() -> None:
    events = run((FIXTURES / "parallel-sleep.jsonl").read_text().splitlines())
    tools = [(type(e).__name__, e.summary) for e in events if isinstance(e, (ToolStarted, ToolFinished))]
    assert tools == [
        ("ToolStarted", "Ran `sleep 6`"),
        ("ToolStarted", "Ran `sleep 4`"),
        ("ToolFinished", "Ran `sleep 4`"),
        ("ToolFinished", "Ran `sleep 6`"),
    ]


def test_event_order_follows_the_transcript() -> None:
    events = run((FIXTURES / "subagent-sleep-v2.jsonl").read_text().splitlines())
    assert [type(e).__name__ for e in events] == [
        "Started",
        "TextDelta",
        "ToolStarted",
        "ToolFinished",
        "TextDelta",
        "Result",
    ]


# --- --stream-partial-output: deltas, then the same text again ------------------------


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.name)
@pytest.mark.parametrize("whole_recap", [False, True], ids=["segment-recap", "whole-answer-recap"])
def test_partial_output_recaps_are_not_repeated(path: Path, whole_recap: bool) -> None:
    events = run(dumps(with_partial_output(raw(path), chunk=3, whole_recap=whole_recap)))
    streamed = answer(events)
    assert streamed == the_result(events).text
    assert streamed == "".join(assistant_texts(path))  # recaps added nothing
    assert len(only(events, TextDelta)) > len(assistant_texts(path))  # really streamed


def test_partial_output_all_four_forms_seen_in_one_session() -> None:
    # Forms reported on forum.cursor.com ("stream-partial-output assistant events have
    # multiple undocumented forms"): a whole-segment delta, its model_call_id recap,
    # small deltas, and an end-of-turn message without timestamp_ms.
    lines = dumps(
        [
            init(),
            assistant("Reading the file...", timestamp_ms=1),  # form 1
            assistant("Reading the file...", model_call_id="a594-0", timestamp_ms=2),  # form 2
            tool("started", "c1", "readToolCall", {"path": "/home/user/project/README.md"}),
            tool(
                "completed",
                "c1",
                "readToolCall",
                {"path": "/home/user/project/README.md"},
                {"success": {"content": "hi"}},
            ),
            assistant("It says ", timestamp_ms=3),  # form 3
            assistant("hi.", timestamp_ms=4),
            assistant("Reading the file...It says hi."),  # form 4: everything again
            result("Reading the file...It says hi."),
        ]
    )
    events = run(lines)
    assert [e.text for e in only(events, TextDelta)] == ["Reading the file...", "It says ", "hi."]
    assert the_result(events).text == "Reading the file...It says hi."


def test_recap_with_extra_trailing_newlines_adds_only_them() -> None:
    # nexu-io/open-design#1954: the model_call_id recap ended with "\n\n" the deltas lacked
    events = run(
        dumps(
            [
                init(),
                assistant("Looking at ", timestamp_ms=1),
                assistant("the project.", timestamp_ms=2),
                assistant("Looking at the project.\n\n", model_call_id="c5f2-0", timestamp_ms=3),
                result("Looking at the project.\n\n"),
            ]
        )
    )
    assert answer(events) == "Looking at the project.\n\n"


def test_repeated_tokens_inside_deltas_are_kept() -> None:
    # Deltas are never compared with each other: "**" twice is Markdown, not a replay.
    events = run(
        dumps(
            [
                init(),
                *(assistant(t, timestamp_ms=i) for i, t in enumerate(["**", "bold", "**"])),
                result("**bold**"),
            ]
        )
    )
    assert answer(events) == "**bold**"


def test_without_partial_output_a_message_repeating_earlier_words_is_kept() -> None:
    events = run((FIXTURES / "parallel-sleep.jsonl").read_text().splitlines())
    deltas = [e.text for e in only(events, TextDelta)]
    assert deltas[-1] == "done"  # although "`done`" already appeared in the first message


def test_growing_snapshots_from_older_clis_emit_only_the_new_tail() -> None:
    events = run(
        dumps(
            [
                init(),
                assistant("The answer"),
                assistant("The answer is 42."),
                result("The answer is 42."),
            ]
        )
    )
    assert [e.text for e in only(events, TextDelta)] == ["The answer", " is 42."]


# --- result ----------------------------------------------------------------------------


def test_usage_is_read_from_the_result() -> None:
    events = run(dumps([init(), result("ok", usage={"inputTokens": 14948, "outputTokens": 103})]))
    assert the_result(events).usage == Usage(input_tokens=14948, output_tokens=103)


def test_usage_with_cache_tokens() -> None:
    usage = {"inputTokens": 10, "outputTokens": 20, "cacheReadTokens": 30, "cacheWriteTokens": 40}
    events = run(dumps([init(), result("ok", usage=usage)]))
    assert the_result(events).usage == Usage(
        input_tokens=10, output_tokens=20, cache_read_tokens=30, cache_write_tokens=40
    )


def test_result_text_is_preferred_over_the_stream() -> None:
    events = run(dumps([init(), assistant("draft"), result("final words")]))
    assert the_result(events).text == "final words"


def test_missing_result_text_falls_back_to_the_stream() -> None:
    line = result("x")
    del line["result"]
    events = run(dumps([init(), assistant("streamed answer"), line]))
    assert the_result(events).text == "streamed answer"


def test_error_result_becomes_an_agent_error() -> None:
    events = run(dumps([init(), result("You've hit your usage limit", is_error=True, subtype="error")]))
    errors = only(events, AgentError)
    assert [e.kind for e in errors] == [ErrorKind.QUOTA]
    assert not only(events, Result)


def test_done_after_result_and_later_lines_are_ignored() -> None:
    parser = CursorStreamParser()
    assert not parser.done
    run(dumps([init(), assistant("hi"), result("hi")]), parser)
    assert parser.done
    assert parser.feed(json.dumps(assistant("more text")) + "\n") == []
    assert parser.feed(json.dumps(result("again")) + "\n") == []
    assert parser.finish(137, "killed") == []


# --- tools -----------------------------------------------------------------------------

SUMMARIES = [
    ("readToolCall", {"path": "/home/user/project/src/app.py"}, "read", "Read src/app.py"),
    ("shellToolCall", {"command": "ls -la"}, "shell", "Ran `ls -la`"),
    (
        "grepToolCall",
        {"pattern": "retry", "path": "/home/user/project"},
        "grep",
        "Searched for 'retry'",
    ),
    (
        "grepToolCall",
        {"pattern": "retry", "path": "/home/user/project/src"},
        "grep",
        "Searched for 'retry' in src",
    ),
    (
        "globToolCall",
        {"globPattern": "**/*.py", "targetDirectory": "/home/user/project"},
        "glob",
        "Looked for files matching '**/*.py'",
    ),
    ("lsToolCall", {"path": "/home/user/project/src", "ignore": []}, "ls", "Listed src/"),
    ("lsToolCall", {"path": "/home/user/project"}, "ls", "Listed ./"),
    (
        "editToolCall",
        {"path": "/home/user/project/a.py", "streamContent": "x"},
        "edit",
        "Edited a.py",
    ),
    ("writeToolCall", {"path": "/home/user/project/b.md"}, "write", "Wrote b.md"),
    ("deleteToolCall", {"path": "/home/user/project/c.txt"}, "delete", "Deleted c.txt"),
    (
        "semSearchToolCall",
        {"query": "where is auth handled"},
        "semSearch",
        "Searched the codebase for 'where is auth handled'",
    ),
    (
        "webFetchToolCall",
        {"url": "https://example.com/x"},
        "webFetch",
        "Fetched https://example.com/x",
    ),
    ("updateTodosToolCall", {"todos": []}, "updateTodos", "Updated the to-do list"),
    ("readToolCall", {"path": "/etc/hosts"}, "read", "Read /etc/hosts"),
    ("fooBarToolCall", {"anything": 1}, "fooBar", "Used fooBar"),
    ("shellToolCall", {"command": "echo one\necho two"}, "shell", "Ran `echo one…`"),
]


@pytest.mark.parametrize(("kind", "args", "name", "summary"), SUMMARIES, ids=[s[3] for s in SUMMARIES])
def test_tool_summaries(kind: str, args: dict[str, Any], name: str, summary: str) -> None:
    events = run(dumps([init(), tool("started", "c1", kind, args)]))
    assert only(events, ToolStarted) == [ToolStarted(call_id="c1", tool=name, summary=summary)]


def test_long_shell_command_is_shortened() -> None:
    events = run(dumps([init(), tool("started", "c1", "shellToolCall", {"command": "x" * 300})]))
    summary = only(events, ToolStarted)[0].summary
    assert summary.startswith("Ran `xxx") and summary.endswith("…`")
    assert len(summary) < 100


def test_function_style_tool_call() -> None:
    line = tool("started", "c1", "unused", {})
    line["tool_call"] = {"function": {"name": "mcp_github_search", "arguments": '{"q": "x"}'}}
    events = run(dumps([init(), line]))
    assert only(events, ToolStarted) == [
        ToolStarted(call_id="c1", tool="mcp_github_search", summary="Called mcp_github_search")
    ]


def test_metadata_keys_next_to_the_tool_kind_are_ignored() -> None:
    line = tool("started", "c1", "readToolCall", {"path": "/home/user/project/x.py"})
    line["tool_call"] = {"startedAtMs": {"v": 1}, **line["tool_call"], "toolCallId": "c1"}
    events = run(dumps([init(), line]))
    assert only(events, ToolStarted)[0].summary == "Read x.py"


OUTCOMES = [
    ({"success": {"content": "..."}}, True, ""),
    (
        {"failure": {"command": "false", "exitCode": 1, "stderr": "boom"}},
        False,
        "failed: exit code 1, boom",
    ),
    (
        {"error": {"errorMessage": "File not found: nope.py"}},
        False,
        "error: File not found: nope.py",
    ),
    ({"timeout": {"command": "sleep 999", "timeoutMs": 30000}}, False, "timed out"),
    ({"rejected": {"command": "rm -rf /", "reason": ""}}, False, "rejected"),
    ({"rejected": {"command": "curl x", "reason": "not allowed"}}, False, "rejected: not allowed"),
    (
        {"permissionDenied": {"error": "denied by policy"}},
        False,
        "permission denied: denied by policy",
    ),
    ({"somethingNew": {"message": "?"}}, False, "somethingNew: ?"),
]


@pytest.mark.parametrize(
    ("outcome", "ok", "detail"),
    OUTCOMES,
    ids=[next(iter(o[0])) + str(i) for i, o in enumerate(OUTCOMES)],
)
def test_tool_outcomes(outcome: dict[str, Any], ok: bool, detail: str) -> None:
    args = {"command": "x"}
    events = run(
        dumps(
            [
                init(),
                tool("started", "c\n1", "shellToolCall", args),
                tool("completed", "c\n1", "shellToolCall", args, outcome),
            ]
        )
    )
    assert only(events, ToolFinished) == [
        ToolFinished(call_id="c\n1", tool="shell", summary="Ran `x`", ok=ok, detail=detail)
    ]


def test_completed_without_call_id_closes_the_oldest_open_call() -> None:
    done = tool("completed", "", "readToolCall", {"path": "/home/user/project/a"}, {"success": {}})
    del done["call_id"]
    events = run(dumps([init(), tool("started", "c1", "readToolCall", {"path": "/home/user/project/a"}), done]))
    assert [f.call_id for f in only(events, ToolFinished)] == ["c1"]


def test_workspace_argument_overrides_the_reported_cwd() -> None:
    parser = CursorStreamParser(workspace="/repo")
    events = run(
        dumps(
            [
                init(cwd="/elsewhere"),
                tool("started", "c1", "readToolCall", {"path": "/repo/pkg/mod.py"}),
            ]
        ),
        parser,
    )
    assert only(events, ToolStarted)[0].summary == "Read pkg/mod.py"


# --- robustness ------------------------------------------------------------------------


def test_non_json_line_becomes_a_diagnostic() -> None:
    parser = CursorStreamParser()
    assert parser.feed("Warning: cursor-agent update available\n") == [
        Diagnostic(text="Warning: cursor-agent update available")
    ]
    assert parser.feed('{"type": "assistant", "message": \n') == [Diagnostic(text='{"type": "assistant", "message": ')]
    assert parser.feed("[1, 2]\n") == [Diagnostic(text="[1, 2]")]
    assert parser.feed("\n") == []
    assert not parser.done


def test_unknown_event_types_and_fields_are_ignored() -> None:
    events = run(
        dumps(
            [
                init(),
                {"type": "status", "subtype": "connecting", "session_id": SESSION},
                {"type": "tool_call", "subtype": "progress", "call_id": "c9"},
                {"type": "system", "subtype": "heartbeat"},
                assistant("hello", brand_new_field={"x": 1}),
                {
                    "type": "user",
                    "message": {"role": "user", "content": [{"type": "text", "text": "prompt"}]},
                },
                result("hello", another_new_field=[1]),
            ]
        )
    )
    assert [type(e).__name__ for e in events] == ["Started", "TextDelta", "Result"]


def test_non_text_content_parts_are_skipped() -> None:
    line = assistant("visible")
    line["message"]["content"].insert(0, {"type": "image", "data": "..."})
    assert answer(run(dumps([init(), line]))) == "visible"


def test_sub_agent_text_is_not_part_of_the_answer() -> None:
    other = assistant("sub-agent report")
    other["session_id"] = "another-session"
    events = run(dumps([init(), other, assistant("main answer"), result("main answer")]))
    assert answer(events) == "main answer"


def test_second_init_does_not_restart_the_session() -> None:
    second = init() | {"session_id": "sub-agent-session", "model": "other"}
    events = run(dumps([init(), second]))
    assert only(events, Started) == [Started(session_id=SESSION, model="gpt-5")]


# --- failures on stderr ----------------------------------------------------------------

STDERR_CASES = [
    (
        "Error: Authentication required. Please run 'agent login' first, or set CURSOR_API_KEY environment variable.",
        ErrorKind.AUTH,
        "CURSOR_API_KEY",
    ),
    (
        "Cannot use this model: gpt-9-ultra. Available models: auto, composer-2.5, gpt-5.2, sonnet-4.5",
        ErrorKind.BAD_MODEL,
        "cursor-agent cannot use the model gpt-9-ultra. Available models: auto, composer-2.5, gpt-5.2, sonnet-4.5",
    ),
    (
        "ActionRequiredError: You've hit your usage limit. Upgrade to Pro to continue.",
        ErrorKind.QUOTA,
        "usage limit",
    ),
    ("Workspace Trust Required", ErrorKind.UNTRUSTED_WORKSPACE, "--trust"),
    ("Error: connect ECONNREFUSED 10.0.0.2:443", ErrorKind.EGRESS_BLOCKED, EGRESS_BLOCKED_MESSAGE),
    (
        # a lookup inside the sandbox (which has no resolver) went around the proxy
        "Error: getaddrinfo ENOTFOUND api2.cursor.sh",
        ErrorKind.EGRESS_BLOCKED,
        EGRESS_BLOCKED_MESSAGE,
    ),
    (
        # the proxy let it through and the name did not resolve on the host (Squid's page)
        "Error: upstream answered ERR_DNS_FAIL for api2.cursor.sh",
        ErrorKind.UNREACHABLE,
        "its name did not resolve (ERR_DNS_FAIL)",
    ),
    (
        # the proxy allowed the CONNECT but could not reach the endpoint (Squid's 503)
        "TypeError: fetch failed\n  cause: Proxy response (503) !== 200 when HTTP Tunneling",
        ErrorKind.UNREACHABLE,
        "the egress proxy let it through but could not connect (Proxy response (503))",
    ),
    ("TypeError: fetch failed", ErrorKind.EGRESS_BLOCKED, EGRESS_BLOCKED_MESSAGE),
    ("Error: connect ETIMEDOUT 104.18.0.1:443", ErrorKind.EGRESS_BLOCKED, EGRESS_BLOCKED_MESSAGE),
    (
        "Error: tunneling socket could not be established, statusCode=403",
        ErrorKind.EGRESS_BLOCKED,
        EGRESS_BLOCKED_MESSAGE,
    ),
    (
        "Request failed: proxy returned 403 Forbidden",
        ErrorKind.EGRESS_BLOCKED,
        EGRESS_BLOCKED_MESSAGE,
    ),
    (
        # a refused connection explains the auth failure that follows it
        "Error: connect ECONNREFUSED 127.0.0.1:3128\nError: Authentication required.",
        ErrorKind.EGRESS_BLOCKED,
        EGRESS_BLOCKED_MESSAGE,
    ),
    (
        "Segmentation fault (core dumped)",
        ErrorKind.AGENT,
        "cursor-agent exited with code 1: Segmentation fault",
    ),
]


@pytest.mark.parametrize(
    ("stderr", "kind", "expected"),
    STDERR_CASES,
    ids=[c[1].value + str(i) for i, c in enumerate(STDERR_CASES)],
)
def test_failure_without_result_is_classified(stderr: str, kind: ErrorKind, expected: str) -> None:
    parser = CursorStreamParser()
    run(dumps([init()]), parser)
    events = parser.finish(1, stderr + "\n")
    assert len(events) == 1 and isinstance(events[0], AgentError)
    assert events[0].kind is kind
    assert expected in events[0].message
    if kind is ErrorKind.EGRESS_BLOCKED:
        assert events[0].message == EGRESS_BLOCKED_MESSAGE
    assert parser.finish(1, stderr) == []  # reported once


def test_bad_model_without_a_model_list() -> None:
    events = CursorStreamParser().finish(1, "Cannot use this model: foo.")
    assert events == [AgentError(kind=ErrorKind.BAD_MODEL, message="cursor-agent cannot use the model foo")]


def test_silent_failure_names_the_exit_code() -> None:
    events = CursorStreamParser().finish(3, "")
    assert events == [AgentError(kind=ErrorKind.AGENT, message="cursor-agent exited with code 3 without an answer")]


def test_clean_exit_without_result_is_still_an_error() -> None:
    events = CursorStreamParser().finish(0, "")
    assert [e.kind for e in events if isinstance(e, AgentError)] == [ErrorKind.AGENT]


def test_stderr_ansi_codes_are_stripped() -> None:
    events = CursorStreamParser().finish(2, "\x1b[31mError:\x1b[0m something broke\n")
    assert events[0].message == "cursor-agent exited with code 2: Error: something broke"


def test_open_tool_calls_are_closed_when_the_process_dies() -> None:
    parser = CursorStreamParser()
    run(dumps([init(), tool("started", "c1", "shellToolCall", {"command": "sleep 100"})]), parser)
    events = parser.finish(137, "")
    assert events[0] == ToolFinished(
        call_id="c1", tool="shell", summary="Ran `sleep 100`", ok=False, detail="interrupted"
    )
    assert isinstance(events[1], AgentError)
