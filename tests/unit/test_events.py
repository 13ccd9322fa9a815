"""The normalized agent event model: every event type survives a JSON round trip."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

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
    event_from_dict,
    is_terminal,
    parse_event,
)

ONE_OF_EACH: list[AgentEvent] = [
    Started(session_id="d43015b9-0707-43f4-b2df-0bcea7891654", model="Auto"),
    Started(),
    TextDelta(text="I’ll run `sleep 5` in bash.\n\n"),
    ToolStarted(call_id="call_PFAu\nfc_0d26", tool="shell", summary="Ran `sleep 5`"),
    ToolFinished(call_id="call_PFAu\nfc_0d26", tool="shell", summary="Ran `sleep 5`", ok=True),
    ToolFinished(call_id="c2", tool="read", summary="Read a.py", ok=False, detail="error: no such file"),
    Result(text="done", duration_ms=16460, usage=Usage(input_tokens=14948, output_tokens=103)),
    Result(
        text="",
        duration_ms=None,
        usage=Usage(input_tokens=1, output_tokens=2, cache_read_tokens=3, cache_write_tokens=4),
    ),
    AgentError(
        kind=ErrorKind.EGRESS_BLOCKED,
        message="LLM endpoint not reachable (blocked by egress policy)",
    ),
    Diagnostic(text="Warning: something odd {not json"),
]


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: type(e).__name__)
def test_json_round_trip(event: AgentEvent) -> None:
    line = event.model_dump_json()
    assert "\n" not in line  # one event per NDJSON line, even with newlines in fields
    back = parse_event(line)
    assert type(back) is type(event)
    assert back == event
    assert event_from_dict(json.loads(line)) == event


def test_type_tags_are_stable() -> None:
    tags = {type(e).__name__: json.loads(e.model_dump_json())["type"] for e in ONE_OF_EACH}
    assert tags == {
        "Started": "started",
        "TextDelta": "text_delta",
        "ToolStarted": "tool_started",
        "ToolFinished": "tool_finished",
        "Result": "result",
        "AgentError": "error",
        "Diagnostic": "diagnostic",
    }


def test_error_kind_serializes_as_plain_string() -> None:
    data = json.loads(AgentError(kind=ErrorKind.QUOTA, message="limit").model_dump_json())
    assert data == {"type": "error", "kind": "quota", "message": "limit"}
    assert parse_event('{"type":"error","kind":"auth","message":"x"}').kind == "auth"


def test_error_kinds_are_the_documented_set() -> None:
    assert {k.value for k in ErrorKind} == {
        "auth",
        "quota",
        "bad_model",
        "untrusted_workspace",
        "context_overflow",
        "egress_blocked",
        "unreachable",
        "agent",
        "timeout",
        "oom",
        "cancelled",
        "infra",
    }


def test_unknown_error_kind_is_rejected() -> None:
    with pytest.raises(ValidationError):
        parse_event('{"type":"error","kind":"sunspots","message":"x"}')


def test_unknown_event_type_is_rejected() -> None:
    with pytest.raises(ValidationError):
        parse_event('{"type":"telepathy","text":"x"}')


def test_missing_required_field_is_rejected() -> None:
    with pytest.raises(ValidationError):
        parse_event('{"type":"tool_started","call_id":"c1","tool":"read"}')


def test_tool_finished_detail_defaults_to_empty() -> None:
    event = parse_event('{"type":"tool_finished","call_id":"c","tool":"t","summary":"s","ok":true}')
    assert isinstance(event, ToolFinished)
    assert event.detail == ""


def test_events_are_immutable() -> None:
    event = TextDelta(text="a")
    with pytest.raises(ValidationError):
        event.text = "b"  # type: ignore[misc]


def test_terminal_events() -> None:
    assert is_terminal(Result(text="x"))
    assert is_terminal(AgentError(kind=ErrorKind.AGENT, message="x"))
    assert not is_terminal(TextDelta(text="x"))
    assert not is_terminal(Diagnostic(text="x"))
