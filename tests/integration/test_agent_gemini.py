"""The real Gemini CLI in the real sandbox, through the egress proxy, against a fake Gemini API."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from sandbox.agents.adapters import GeminiAgent
from sandbox.agents.events import AgentError, ErrorKind, Result, Started, TextDelta, ToolFinished, ToolStarted
from sandbox.agents.failures import EGRESS_BLOCKED_MESSAGE
from sandbox.agents.session import AgentSession
from sandbox.agents.settings import AgentSettings
from sandbox.spec import Limits
from tests.conftest import REDIS_TEST_URL
from tests.fakes.gemini_api import FakeGeminiAPI, FunctionCall, RecordedRequest, Text

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leftovers")]
KEY = "test-key-" + secrets.token_hex(4)


@pytest.fixture()
def api():
    with FakeGeminiAPI(expected_key=KEY) as fake:
        yield fake


@pytest.fixture()
def gemini(api, built_images) -> GeminiAgent:
    return GeminiAgent(AgentSettings(), api.base_url, SecretStr(KEY))


def answer_with_tool_output(prefix: str):
    """A turn that answers with what the agent's own tool returned: the fake cannot know it otherwise."""

    def turn(request: RecordedRequest) -> Text:
        outputs = [json.dumps(r.get("response", {})) for r in request.function_responses()]
        return Text(prefix + " " + " | ".join(outputs), chunks=3)

    return turn


def collect(session: AgentSession) -> list:
    return list(session.events())


def test_agent_reads_the_mounted_repo_through_its_own_tools(sandbox, gemini, api, repo):
    token = secrets.token_hex(16)
    (repo / "secret.txt").write_text(f"the token is {token}\n")
    api.script(FunctionCall("read_file", {"file_path": "secret.txt"}), answer_with_tool_output("Found:"))
    events = collect(AgentSession(sandbox, gemini, "What is the token?", repo=repo, limits=Limits(timeout=120)))
    result = events[-1]
    assert isinstance(result, Result), (events, api.errors, [r.status for r in api.requests])
    assert token in result.text
    assert isinstance(events[0], Started) and events[0].model == "gemini-2.5-flash"
    assert [e.summary for e in events if isinstance(e, ToolStarted)] == ["Read secret.txt"]
    assert [e.ok for e in events if isinstance(e, ToolFinished)] == [True]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == result.text
    generate = [r for r in api.requests if r.is_generate]
    assert len(generate) == 2 and all(r.api_key == KEY for r in generate)
    assert api.unknown == [] and api.errors == []
    # The prompt reached the API intact, and the tool saw /workspace.
    assert "What is the token?" in generate[0].text()


def test_api_not_allowlisted_is_a_clear_egress_error(sandbox, gemini, api, repo):
    session = AgentSession(
        sandbox, gemini, "hello", repo=repo, egress_allow=("127.0.0.1:1",), limits=Limits(timeout=120)
    )
    events = collect(session)
    final = events[-1]
    assert isinstance(final, AgentError), events
    assert final.kind is ErrorKind.EGRESS_BLOCKED
    assert EGRESS_BLOCKED_MESSAGE in final.message
    assert api.requests == []  # nothing reached the API


def test_write_attempt_refused_by_read_only_mount_answer_still_arrives(sandbox, gemini, api, repo):
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    api.script(
        FunctionCall("write_file", {"file_path": "pwned.txt", "content": "pwned"}),
        answer_with_tool_output("Write result:"),
    )
    events = collect(AgentSession(sandbox, gemini, "Create pwned.txt", repo=repo, limits=Limits(timeout=120)))
    result = events[-1]
    assert isinstance(result, Result), events
    assert "read-only file system" in result.text.lower() or "erofs" in result.text.lower(), result.text
    assert [e.ok for e in events if isinstance(e, ToolFinished)] == [False]
    assert not (repo / "pwned.txt").exists()
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before


def test_askbox_ask_inline_cli(api, repo, built_images, egress_root, gateway):
    api.script(FunctionCall("list_directory", {"dir_path": "."}), answer_with_tool_output("Listing:"))
    proxy = gateway(api.base_url, REDIS_TEST_URL, keys=(KEY,))
    env = {
        **os.environ,
        "ASKBOX_GATEWAY_SOCKET_DIR": str(proxy.socket_dir),  # the key is the gateway's alone
        "ASKBOX_EGRESS_SOCKET_DIR": str(egress_root),
        "ASKBOX_REDIS_URL": REDIS_TEST_URL,  # the worker's pipeline: memory, cache, the gateway's metering
    }
    askbox = Path(sys.executable).parent / "askbox"
    done = subprocess.run(
        [askbox, "ask", "--inline", "--agent", "gemini", "--repo", repo, "What is in here?"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "README.md" in done.stdout and "src" in done.stdout
    progress = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 1 and progress[0].endswith("s] Listed ."), done.stderr
    assert "answered by gemini/gemini-2.5-flash" in done.stderr
    as_json = subprocess.run(
        [askbox, "ask", "--inline", "--json", "--agent", "gemini", "--repo", repo, "again"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert as_json.returncode == 0, as_json.stderr
    types = [json.loads(line)["type"] for line in as_json.stdout.splitlines()]
    assert types[0] == "started" and types[-1] == "result"


def test_the_repositorys_agents_md_reaches_the_model(sandbox, gemini, api, repo):
    # images/agent-gemini/settings.json names AGENTS.md (and GEMINI.md) in
    # context.fileName: the CLI loads it from the snapshot's root into what it sends.
    marker, gemini_marker = (f"marker-{secrets.token_hex(8)}" for _ in range(2))
    (repo / "AGENTS.md").write_text(f"# Notes for agents\n\nThe build is described in {marker}.\n")
    (repo / "GEMINI.md").write_text(f"Gemini's own notes: {gemini_marker}.\n")
    api.script(Text("It is described in the notes."))
    events = collect(AgentSession(sandbox, gemini, "How is it built?", repo=repo, limits=Limits(timeout=120)))
    assert isinstance(events[-1], Result), events
    first = api.generate_requests[0]
    sent = first.text() + "\n" + first.system_text()
    assert marker in sent and gemini_marker in sent
    assert "How is it built?" in first.text()


def test_an_agents_md_cannot_import_files_from_outside_the_repository(sandbox, gemini, api, repo):
    # The CLI's memory import syntax (@path) is limited to the project: a hostile
    # repository's AGENTS.md cannot pull the run's environment (its API key) or other
    # files of the container into the request.
    (repo / "AGENTS.md").write_text("Context:\n@/proc/self/environ\n@/etc/passwd\n@../../etc/hostname\n")
    api.script(Text("ok"))
    events = collect(AgentSession(sandbox, gemini, "hello", repo=repo, limits=Limits(timeout=120)))
    assert isinstance(events[-1], Result), events
    first = api.generate_requests[0]
    sent = first.text() + "\n" + first.system_text()
    assert "@/proc/self/environ" in sent or "Context:" in sent  # the file itself was read
    assert KEY not in sent and "GEMINI_API_KEY" not in sent and "root:x:0:0" not in sent
