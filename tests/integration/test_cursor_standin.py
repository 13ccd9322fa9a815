"""The cursor-agent stand-in (tests/standins/cursor-agent) in a real sandbox container.

cursor-agent cannot be downloaded here, so the cursor adapter is tested against a
stand-in that replays REAL recorded transcripts (tests/fixtures/cursor-stream) through
cursor-agent's command line, with the real CLI's failure modes. These tests pin down that
the stand-in is faithful: same events as the recordings, same failures, real file access
through the read-only mount, real timing, and the "does not exit after result" bug.
"""

from __future__ import annotations

import http.server
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from sandbox import OutcomeKind, SandboxSpec
from sandbox.agents.adapters import CursorAgent
from sandbox.agents.cursor_stream import failure_from_stderr
from sandbox.agents.events import ErrorKind, Result, TextDelta, ToolFinished, ToolStarted
from sandbox.agents.settings import AgentSettings, CursorAgentSettings
from sandbox.outcome import Outcome
from sandbox.spec import Limits
from tests.standins.build import cursor_transcripts

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leftovers")]

API_KEY = "standin-test-key"
# what the cursor adapter passes, minus the prompt (checked against the adapter below)
STREAM_ARGS = ["-p", "--output-format", "stream-json", "--trust", "--sandbox", "disabled"]
PARTIAL_ARGS = [*STREAM_ARGS, "--stream-partial-output"]
RECORDED_CWD = "/home/user/project"

TRANSCRIPTS = cursor_transcripts()
assert TRANSCRIPTS, "no recorded cursor transcripts in tests/fixtures/cursor-stream"


@dataclass
class Ran:
    outcome: Outcome
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # monotonic time of each stdout line
    still_running_after_result: bool | None = None

    @property
    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout]

    @property
    def stderr_text(self) -> str:
        return "\n".join(self.stderr)


def run_standin(
    sandbox,
    image: str,
    args: list[str],
    prompt: str | None,
    *,
    repo: Path | None = None,
    env: dict[str, str] | None = None,
    with_key: bool = True,
    speed: str = "0",
    egress_allow: tuple[str, ...] = (),
    stop_after_result: float | None = None,
) -> Ran:
    """Run ``cursor-agent ARGS`` in the sandbox with PROMPT on stdin and the key handed over
    as the adapter does. With ``stop_after_result``, wait that many seconds after the
    result line, note whether it is still running, stop it."""
    spec = SandboxSpec(
        image=image,
        command=["cursor-agent", *args],
        stdin=prompt.encode() if prompt is not None else None,
        repo=repo,
        env={"CURSOR_STANDIN_SPEED": speed, **(env or {})},
        secret_env={"CURSOR_API_KEY": API_KEY} if with_key else {},
        egress_allow=egress_allow,
        limits=Limits(timeout=60),
    )
    ran = Ran(outcome=None)  # type: ignore[arg-type]
    with sandbox.run(spec) as run:
        for line in run:
            if line.stream == "stderr":
                ran.stderr.append(line.text)
                continue
            ran.stdout.append(line.text)
            ran.arrivals.append(time.monotonic())
            if stop_after_result is not None and '"type":"result"' in line.text:
                time.sleep(stop_after_result)
                run.container.reload()
                ran.still_running_after_result = run.container.status == "running"
                run.stop()
    assert run.outcome is not None
    ran.outcome = run.outcome
    return ran


def kinds(events: list[dict]) -> list[tuple[str, str | None]]:
    return [(e.get("type"), e.get("subtype")) for e in events]


def is_partial_delta(event: dict) -> bool:
    return event.get("type") == "assistant" and "timestamp_ms" in event and "model_call_id" not in event


def texts(events: list[dict]) -> list[str]:
    return ["".join(c["text"] for c in e["message"]["content"]) for e in events if e.get("type") == "assistant"]


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in TRANSCRIPTS[name].read_text().splitlines() if line.strip()]


# --- the command line ----------------------------------------------------------------


def test_version(sandbox, cursor_standin_image):
    ran = run_standin(sandbox, cursor_standin_image, ["--version"], None, with_key=False)
    assert ran.outcome.kind is OutcomeKind.OK, ran.outcome
    assert ran.stdout == ["2026.09.28-64d2043-standin"]


def test_adapter_command_is_what_the_standin_understands():
    settings = AgentSettings(cursor=CursorAgentSettings(proxy="env"), agent_model=None)
    argv = CursorAgent(settings).command(None)  # the prompt goes over stdin (run_standin)
    assert argv[0] == "cursor-agent"
    assert sorted(argv[1:]) == sorted(PARTIAL_ARGS)


# --- replays -------------------------------------------------------------------------


@pytest.mark.parametrize("partial", [True, False], ids=["partial", "no-partial"])
@pytest.mark.parametrize("name", sorted(TRANSCRIPTS))
def test_replay_is_the_recording(sandbox, cursor_standin_image, name, partial):
    recorded = load(name)
    prompt = f"replay please [transcript:{name}]"
    ran = run_standin(sandbox, cursor_standin_image, PARTIAL_ARGS if partial else STREAM_ARGS, prompt)

    assert ran.outcome.kind is OutcomeKind.OK, (ran.outcome, ran.stderr_text)
    assert ran.stderr == []
    events = ran.events
    expected = recorded if partial else [e for e in recorded if not is_partial_delta(e)]
    assert kinds(events) == kinds(expected)
    assert texts(events) == texts(expected)
    assert [e["type"] for e in events].count("result") == 1 and events[-1]["type"] == "result"
    assert events[-1]["result"] == recorded[-1]["result"]
    # call ids (with their embedded newline) survive, paired started/completed as recorded
    assert [e.get("call_id") for e in events] == [e.get("call_id") for e in expected]

    # fresh, consistent session id; the recorded workspace is now /workspace
    sessions = {e["session_id"] for e in events}
    assert len(sessions) == len({e["session_id"] for e in recorded})
    assert not sessions & {e["session_id"] for e in recorded}
    assert events[0]["cwd"] == "/workspace"
    assert RECORDED_CWD not in "\n".join(ran.stdout)
    user = next(e for e in events if e["type"] == "user")
    assert user["message"]["content"][0]["text"] == prompt
    # model_call_ids keep pointing at the (new) request id
    request_id = events[-1]["request_id"]
    assert request_id != recorded[-1]["request_id"]
    assert all(e["model_call_id"].startswith(request_id) for e in events if "model_call_id" in e)


def test_default_transcript_is_full_session(sandbox, cursor_standin_image):
    ran = run_standin(sandbox, cursor_standin_image, PARTIAL_ARGS, "anything")
    assert ran.outcome.kind is OutcomeKind.OK
    assert kinds(ran.events) == kinds(load("full_session"))


@pytest.mark.parametrize(
    "fmt, check",
    [
        ("json", lambda out: len(out) == 1 and json.loads(out[0])["type"] == "result"),
        ("text", lambda out: out == ["done"]),  # full_session's recorded result text
    ],
)
def test_other_output_formats(sandbox, cursor_standin_image, fmt, check):
    ran = run_standin(sandbox, cursor_standin_image, ["-p", "--trust", "--output-format", fmt], "hi")
    assert ran.outcome.kind is OutcomeKind.OK
    assert check(ran.stdout), ran.stdout


def test_timing_follows_the_recording(sandbox, cursor_standin_image):
    # the shortest replay that still takes a noticeable time (at least 1 s)
    delays = {name: _recorded_delay(load(name)) for name in TRANSCRIPTS}
    long_enough = [n for n, d in delays.items() if d >= 1.0]
    if not long_enough:
        pytest.skip(f"no transcript with a second of recorded delays: {delays}")
    name = min(long_enough, key=delays.__getitem__)
    bound = delays[name]  # the sum of the recorded gaps, each capped at 0.3 s
    prompt = f"[transcript:{name}]"
    slow = run_standin(sandbox, cursor_standin_image, PARTIAL_ARGS, prompt, speed="1")
    fast = run_standin(sandbox, cursor_standin_image, PARTIAL_ARGS, prompt, speed="0")
    assert slow.outcome.ok and fast.outcome.ok
    slow_span = slow.arrivals[-1] - slow.arrivals[0]
    fast_span = fast.arrivals[-1] - fast.arrivals[0]
    assert slow_span >= 0.9 * bound, (slow_span, bound)
    assert slow_span >= fast_span + 0.5 * bound, (slow_span, fast_span, bound)


def _recorded_delay(events: list[dict], cap: float = 0.3) -> float:
    stamps = [e["timestamp_ms"] for e in events if isinstance(e.get("timestamp_ms"), int)]
    return sum(min((b - a) / 1000, cap) for a, b in itertools.pairwise(stamps) if b > a)


# --- failures like the real CLI's ----------------------------------------------------


@pytest.mark.parametrize(
    "args, prompt, with_key, message, kind",
    [
        (
            PARTIAL_ARGS,
            "hello",
            False,
            "Error: Authentication required. Please run 'agent login' first, "
            "or set CURSOR_API_KEY environment variable.",
            ErrorKind.AUTH,
        ),
        (
            [*PARTIAL_ARGS, "--model", "gpt-4o"],
            "hello",
            True,
            "Cannot use this model: gpt-4o. Available models: auto, gpt-5, sonnet-4.5, composer-1",
            ErrorKind.BAD_MODEL,
        ),
        (
            [a for a in PARTIAL_ARGS if a != "--trust"],
            "hello",
            True,
            "Workspace Trust Required",
            ErrorKind.UNTRUSTED_WORKSPACE,
        ),
        (
            PARTIAL_ARGS,
            "hello [usage-limit]",
            True,
            "ActionRequiredError: You've hit your usage limit",
            ErrorKind.QUOTA,
        ),
        (PARTIAL_ARGS, "hello [network-down]", True, "ConnectError: [unavailable]", ErrorKind.EGRESS_BLOCKED),
    ],
    ids=["no-key", "bad-model", "no-trust", "usage-limit", "network-down"],
)
def test_failures(sandbox, cursor_standin_image, args, prompt, with_key, message, kind):
    ran = run_standin(sandbox, cursor_standin_image, args, prompt, with_key=with_key)
    assert ran.outcome.kind is OutcomeKind.EXIT_ERROR, ran.outcome
    assert ran.outcome.exit_code == 1
    assert message in ran.stderr_text
    assert ran.stdout == []  # no events at all, in particular no result
    if kind is ErrorKind.UNTRUSTED_WORKSPACE:
        assert "--trust" in ran.stderr_text
    # the cursor adapter reads the stand-in's stderr as the failure it imitates
    assert failure_from_stderr(ran.outcome.exit_code, ran.outcome.stderr_tail).kind is kind


# --- real work in the workspace ------------------------------------------------------


def test_read_returns_the_mounted_file(sandbox, cursor_standin_image, repo):
    ran = run_standin(sandbox, cursor_standin_image, PARTIAL_ARGS, "What is in it? [read:README.md]", repo=repo)
    assert ran.outcome.kind is OutcomeKind.OK, (ran.outcome, ran.stderr_text)
    events = ran.events
    assert kinds(events)[:2] == [("system", "init"), ("user", None)]
    completed = [e for e in events if e["type"] == "tool_call" and e["subtype"] == "completed"]
    assert len(completed) == 1
    read = completed[0]["tool_call"]["readToolCall"]
    assert read["args"]["path"] == "/workspace/README.md"
    assert read["result"]["success"]["content"] == "# demo repo\n"
    assert read["result"]["success"]["totalLines"] == 1
    assert "\n" in completed[0]["call_id"]  # the real id shape, newline included
    result = events[-1]
    assert result["type"] == "result" and result["subtype"] == "success"
    assert "# demo repo" in result["result"]
    assert {"inputTokens", "outputTokens"} <= set(result["usage"])
    # partial output: deltas, then each segment replayed whole; result = replays joined
    assert any(is_partial_delta(e) for e in events)
    replays = [e for e in events if e["type"] == "assistant" and not is_partial_delta(e)]
    assert result["result"] == "".join(texts(replays))
    assert "".join(texts([e for e in events if is_partial_delta(e)])) == result["result"]

    # the adapter's parser makes one answer of it, without repeating the replays
    parser = CursorAgent(AgentSettings(cursor=CursorAgentSettings(proxy="env"))).parser()
    parsed = [ev for line in ran.stdout for ev in parser.feed(line)]
    assert parser.done
    assert "".join(ev.text for ev in parsed if isinstance(ev, TextDelta)) == result["result"]
    assert [ev.text for ev in parsed if isinstance(ev, Result)] == [result["result"]]
    assert [ev.summary for ev in parsed if isinstance(ev, ToolStarted)] == ["Read README.md"]
    assert [ev.ok for ev in parsed if isinstance(ev, ToolFinished)] == [True]

    # without --stream-partial-output: the same answer, no deltas
    plain = run_standin(sandbox, cursor_standin_image, STREAM_ARGS, "[read:README.md]", repo=repo)
    assert plain.outcome.kind is OutcomeKind.OK
    assert not any(is_partial_delta(e) for e in plain.events)
    assert "# demo repo" in plain.events[-1]["result"]


def test_read_of_a_missing_file_fails_the_tool_not_the_run(sandbox, cursor_standin_image, repo):
    ran = run_standin(sandbox, cursor_standin_image, PARTIAL_ARGS, "[read:nope/missing.md]", repo=repo)
    assert ran.outcome.kind is OutcomeKind.OK
    completed = next(e for e in ran.events if kinds([e]) == [("tool_call", "completed")])
    result = completed["tool_call"]["readToolCall"]["result"]
    assert "success" not in result and "/workspace/nope/missing.md" in result["error"]["errorMessage"]
    assert ran.events[-1]["type"] == "result"
    assert "does not exist" in ran.events[-1]["result"]


def test_write_hits_the_read_only_mount(sandbox, cursor_standin_image, repo):
    ran = run_standin(sandbox, cursor_standin_image, PARTIAL_ARGS, "Please create it [write:x]", repo=repo)
    assert ran.outcome.kind is OutcomeKind.OK, (ran.outcome, ran.stderr_text)
    events = ran.events
    completed = next(e for e in events if kinds([e]) == [("tool_call", "completed")])
    edit = completed["tool_call"]["editToolCall"]
    assert edit["args"]["path"] == "/workspace/x"
    assert "Read-only file system" in edit["result"]["error"]["errorMessage"]
    assert events[-1]["type"] == "result" and events[-1]["subtype"] == "success"
    assert "Read-only file system" in events[-1]["result"]
    assert not (repo / "x").exists()


# --- the hang-after-result bug -------------------------------------------------------


def test_hang_after_result_needs_a_stop(sandbox, cursor_standin_image):
    ran = run_standin(sandbox, cursor_standin_image, PARTIAL_ARGS, "[hang-after-result]", stop_after_result=1.5)
    assert ran.events[-1]["type"] == "result"
    assert ran.still_running_after_result is True
    assert ran.outcome.kind is OutcomeKind.OK and ran.outcome.stopped_early, ran.outcome


# --- egress --------------------------------------------------------------------------


class _Backend(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []  # what the backend was asked, across its handler instances

    def do_GET(self) -> None:
        type(self).seen.append(f"{self.path} {self.headers.get('User-Agent')}")
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def backend():
    _Backend.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_backend_reached_through_the_egress_proxy(sandbox, cursor_standin_image, backend):
    url = f"http://127.0.0.1:{backend}/v1/ping"
    ran = run_standin(
        sandbox,
        cursor_standin_image,
        PARTIAL_ARGS,
        "hi",
        env={"CURSOR_STANDIN_BACKEND": url},
        egress_allow=(f"127.0.0.1:{backend}",),
    )
    assert ran.outcome.kind is OutcomeKind.OK, (ran.outcome, ran.stderr_text)
    assert ran.events[-1]["type"] == "result"
    assert len(_Backend.seen) == 1 and _Backend.seen[0].startswith("/v1/ping cursor-agent/")


def test_backend_refused_by_the_egress_proxy(sandbox, cursor_standin_image, backend):
    ran = run_standin(
        sandbox,
        cursor_standin_image,
        PARTIAL_ARGS,
        "hi",
        env={"CURSOR_STANDIN_BACKEND": f"http://127.0.0.1:{backend}/"},
        egress_allow=("127.0.0.1:1",),  # a proxy is there, but not for this backend
    )
    assert ran.outcome.kind is OutcomeKind.EXIT_ERROR and ran.outcome.exit_code == 1
    assert "Proxy response (403) !== 200 when HTTP Tunneling" in ran.stderr_text
    assert ran.stdout == []
    assert _Backend.seen == []
    assert failure_from_stderr(1, ran.outcome.stderr_tail).kind is ErrorKind.EGRESS_BLOCKED
