"""The cursor adapter end to end: AgentSession -> sandbox -> cursor-agent stand-in -> events."""

from __future__ import annotations

import pytest

from sandbox.agents.adapters import CursorAgent
from sandbox.agents.events import AgentError, ErrorKind, Result, Started, TextDelta, ToolFinished, ToolStarted
from sandbox.agents.failures import EGRESS_BLOCKED_MESSAGE
from sandbox.agents.session import AgentSession
from sandbox.agents.settings import AgentSettings, CursorAgentSettings
from sandbox.spec import Limits

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leftovers")]


@pytest.fixture()
def cursor(cursor_standin_image) -> CursorAgent:
    return CursorAgent(
        AgentSettings(cursor=CursorAgentSettings(api_key="key-for-the-standin", image=cursor_standin_image))
    )


def run(sandbox, agent, prompt, repo, **kwargs) -> list:
    # Cursor's endpoints are allowlisted by default; the stand-in never dials them.
    return list(AgentSession(sandbox, agent, prompt, repo=repo, limits=Limits(timeout=60), **kwargs).events())


def test_reads_the_repo_and_answers_once(sandbox, cursor, repo):
    events = run(sandbox, cursor, "[read:README.md] what is this?", repo)
    result = events[-1]
    assert isinstance(result, Result), events
    assert "# demo repo" in result.text
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert streamed == result.text  # partial deltas plus the replay: no text twice
    assert [e.summary for e in events if isinstance(e, ToolStarted)] == ["Read README.md"]
    assert [e.ok for e in events if isinstance(e, ToolFinished)] == [True]
    assert result.usage is not None and result.usage.output_tokens


def test_result_ends_the_run_even_if_cursor_agent_hangs(sandbox, cursor, repo, docker_client):
    events = run(sandbox, cursor, "[read:README.md][hang-after-result]", repo)
    assert isinstance(events[-1], Result)  # and no_leftovers proves the container is gone


def test_write_is_refused_by_the_mount_and_the_answer_arrives(sandbox, cursor, repo):
    events = run(sandbox, cursor, "[write:pwned.txt]", repo)
    assert isinstance(events[-1], Result), events
    failed = [e for e in events if isinstance(e, ToolFinished) and not e.ok]
    assert len(failed) == 1 and "Read-only file system" in failed[0].detail
    assert not (repo / "pwned.txt").exists()


@pytest.mark.parametrize(
    "prompt, settings, kind, words",
    [
        ("hi", {"api_key": None}, ErrorKind.AUTH, "CURSOR_API_KEY"),
        ("hi", {"agent_model": "gpt-0"}, ErrorKind.BAD_MODEL, "gpt-0"),
        ("[usage-limit]", {}, ErrorKind.QUOTA, "usage limit"),
        ("[network-down]", {}, ErrorKind.EGRESS_BLOCKED, EGRESS_BLOCKED_MESSAGE),
    ],
    ids=["no-key", "bad-model", "usage-limit", "network"],
)
def test_failures_without_a_result_become_plain_errors(
    sandbox, cursor_standin_image, repo, prompt, settings, kind, words
):
    agent = CursorAgent(
        AgentSettings(
            agent_model=settings.get("agent_model"),
            cursor=CursorAgentSettings(
                **{
                    "api_key": "k",
                    "image": cursor_standin_image,
                    **{k: v for k, v in settings.items() if k != "agent_model"},
                }
            ),
        )
    )
    events = run(sandbox, agent, prompt, repo)
    final = events[-1]
    assert isinstance(final, AgentError), events
    assert final.kind is kind and words in final.message


def test_deadline_ends_in_a_timeout_error(sandbox, cursor, repo):
    session = AgentSession(sandbox, cursor, "[transcript:direct-sleep]", repo=repo, limits=Limits(timeout=2))
    events = list(session.events())
    assert isinstance(events[-1], AgentError) and events[-1].kind is ErrorKind.TIMEOUT
    assert isinstance(events[0], Started)  # what was done so far was streamed before it
    assert "timed out after 2 s" in events[-1].message
