"""ClaudeStreamParser and CodexStreamParser against the real CLIs' recorded output.

tests/fixtures/claude-stream/ and codex-stream/ hold what Claude Code 2.1.332 and Codex CLI
0.171.0 printed against the fake Anthropic and OpenAI APIs (recorded by
tests/fixtures/record_agent_streams.py): a plain answer, tool steps (one failing), and a
run ended by each kind of failure the issue lists (usage limits, auth, unknown model,
context overflow). Each must become the one event model, ending in one terminal event.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.agents.claude_stream import ClaudeStreamParser
from sandbox.agents.codex_stream import CodexStreamParser, shell_command
from sandbox.agents.events import (
    AgentError,
    AgentEvent,
    ErrorKind,
    Result,
    Started,
    TextDelta,
    ToolFinished,
    ToolStarted,
    is_terminal,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
WORKSPACE = "/tmp/askbox-rec/workspace"
PARSERS = {"claude": ClaudeStreamParser, "codex": CodexStreamParser}


def parse(agent: str, name: str) -> list[AgentEvent]:
    parser = PARSERS[agent](workspace=WORKSPACE)
    stdout = (FIXTURES / f"{agent}-stream" / f"{name}.jsonl").read_text().splitlines()
    stderr = (FIXTURES / f"{agent}-stream" / f"{name}.stderr.txt").read_text()
    events: list[AgentEvent] = []
    for line in stdout:
        events += parser.feed(line)
        if parser.done:
            break
    events += parser.finish(1, stderr)
    assert sum(map(is_terminal, events)) == 1 and is_terminal(events[-1]), events
    return events


@pytest.mark.parametrize("agent", PARSERS)
def test_a_plain_answer_streams_and_ends_with_its_usage(agent: str) -> None:
    events = parse(agent, "plain")
    assert isinstance(events[0], Started) and events[0].session_id
    result = events[-1]
    assert isinstance(result, Result) and result.text == "This repository is a demo.\n\nIt prints hello."
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == result.text
    assert result.usage is not None and result.usage.input_tokens and result.usage.output_tokens


@pytest.mark.parametrize(
    ("agent", "summaries"),
    [
        ("claude", ["Read README.md", "Ran `grep -rn hello src`", "Read missing.txt"]),
        ("codex", ["Ran `cat README.md`", "Ran `grep -rn hello src`", "Ran `cat missing.txt`"]),
    ],
)
def test_tool_steps_are_plain_summaries_paired_by_id(agent: str, summaries: list[str]) -> None:
    events = parse(agent, "tools")
    started = [e for e in events if isinstance(e, ToolStarted)]
    finished = [e for e in events if isinstance(e, ToolFinished)]
    assert [e.summary for e in started] == summaries
    assert [e.call_id for e in finished] == [e.call_id for e in started]
    assert [e.ok for e in finished] == [True, True, False]
    assert "missing.txt" in finished[-1].detail or "not exist" in finished[-1].detail
    result = events[-1]
    assert isinstance(result, Result) and result.text.endswith("It prints hello from src/app.py.")


@pytest.mark.parametrize("agent", PARSERS)
@pytest.mark.parametrize(
    ("name", "kind", "words"),
    [
        ("rate-limited", ErrorKind.QUOTA, "429"),
        ("auth", ErrorKind.AUTH, "API key"),
        ("bad-model", ErrorKind.BAD_MODEL, "model"),
        ("context-overflow", ErrorKind.CONTEXT_OVERFLOW, "context window"),
    ],
)
def test_each_failure_ends_with_one_clear_line_of_its_kind(agent: str, name: str, kind: ErrorKind, words: str) -> None:
    error = parse(agent, name)[-1]
    assert isinstance(error, AgentError) and error.kind is kind, error
    assert words.lower() in error.message.lower() and "\n" not in error.message


def test_a_run_cut_off_closes_its_open_steps_and_explains() -> None:
    parser = ClaudeStreamParser(workspace=WORKSPACE)
    lines = (FIXTURES / "claude-stream" / "tools.jsonl").read_text().splitlines()
    events: list[AgentEvent] = []
    for line in lines:  # up to the first tool step, then the container is killed
        events += parser.feed(line)
        if any(isinstance(e, ToolStarted) for e in events):
            break
    ending = parser.finish(137, "Killed")
    assert isinstance(ending[-1], AgentError) and any(
        isinstance(e, ToolFinished) and e.detail == "interrupted" for e in ending
    )


def test_codex_commands_are_shown_as_the_agent_wrote_them() -> None:
    assert shell_command("/usr/bin/bash -lc 'cat README.md'") == "cat README.md"
    assert shell_command("bash -lc ls") == "ls"
    assert shell_command("rg -n foo") == "rg -n foo"
