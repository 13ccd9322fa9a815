"""A new user's first mistakes end with one line naming the fix, not a traceback or a loop.

Real `askbox` processes, a real Docker daemon (or none, on purpose) and a real Redis (or a
closed port): Redis unreachable for `ask`, `worker` and `cancel`; a worker whose agent
cannot run (no key, no image) or with no Docker daemon; and where a queued question stands.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from jobs import queue as jobs_queue
from jobs.question import Origin, Question
from jobs.settings import JobSettings
from sandbox import images
from tests.conftest import REDIS_TEST_URL
from tests.integration.pipeline_helpers import ASKBOX, ROOT, free_port

pytestmark = [pytest.mark.docker]
# What agent-cursor's build steps run (images/agent-cursor/Dockerfile): a container of one
# of them outliving the build is the leak.
AGENT_CURSOR_STEPS = ("install -y --no-install-recommends proxychains4", "cursor.com/install")


def askbox(*args: str, timeout: float = 90, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ASKBOX_AGENT", "CURSOR_", "GEMINI_"))}
    return subprocess.run(
        [ASKBOX, *args], env={**clean, **env}, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", [["ask", "--repo", "demo", "hello"], ["worker"], ["cancel", "some-job"]])
def test_redis_unreachable_is_one_line(command: list[str]) -> None:
    closed = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # a port nothing listens on
    result = askbox(*command, ASKBOX_REDIS_URL=closed)
    line = one_line(result)
    assert result.returncode == 1
    assert "Redis not reachable at redis://:***@127.0.0.1:" in line and "ASKBOX_REDIS_URL" in line
    assert "hunter2" not in result.stderr  # the password is masked


def test_worker_with_docker_unreachable_stops_at_once(redis_client, tmp_path) -> None:
    result = askbox("worker", ASKBOX_REDIS_URL=REDIS_TEST_URL, DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    line = one_line(result)
    assert result.returncode == 2
    assert line.startswith("askbox: worker not started: Docker daemon not reachable") and "DOCKER_HOST" in line


def test_worker_for_cursor_without_its_key_stops_naming_the_variable(redis_client, cursor_standin_image) -> None:
    result = askbox(
        "worker",
        ASKBOX_REDIS_URL=REDIS_TEST_URL,
        ASKBOX_AGENT="cursor",
        ASKBOX_CURSOR_IMAGE=cursor_standin_image,
        ASKBOX_REPOS='{"demo": "/tmp"}',
    )
    assert result.returncode == 2, result.stderr
    assert "ASKBOX_AGENT=cursor, but the cursor agent has no key: set CURSOR_API_KEY" in one_line(result)


def test_worker_for_an_agent_without_its_image_names_the_build(redis_client) -> None:
    never_built = "askbox/agent-gemini:0.0.0-never-built"
    result = askbox(
        "worker",
        ASKBOX_REDIS_URL=REDIS_TEST_URL,
        ASKBOX_AGENT="gemini",
        ASKBOX_GEMINI_IMAGE=never_built,
        ASKBOX_REPOS='{"demo": "/tmp"}',
    )
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert never_built in line and "askbox images build" in line


def test_default_cursor_unusable_falls_back_to_gemini_with_a_warning(redis_client, built_images, egress_root) -> None:
    """ASKBOX_AGENT unset and agent-cursor not usable (here: no key): the worker says so once
    and serves with the Gemini agent, as `docker compose up` does where agent-cursor cannot
    be built. It also warns that no repository is configured. --burst: it stops when idle."""
    result = askbox(
        "worker", "--burst", ASKBOX_REDIS_URL=REDIS_TEST_URL, ASKBOX_EGRESS_SOCKET_DIR=str(egress_root), timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "answering with the Gemini agent instead" in result.stderr
    assert "no repository configured" in result.stderr and "ASKBOX_REPOS" in result.stderr


def test_where_a_question_stands(redis_client) -> None:
    """Not "waiting for your other questions" when nothing of the asker's is queued."""
    settings = JobSettings(user_concurrency=1)
    ask = lambda user, text: jobs_queue.enqueue(  # noqa: E731
        redis_client, Question(origin=Origin(kind="terminal", user=user), text=text, repo="demo"), settings
    )
    first = ask("alice", "one")
    assert jobs_queue.where(redis_client, first) == "next in line"
    assert jobs_queue.where(redis_client, ask("bob", "two")) == "1 ahead of it"
    # alice's second waits behind her first (one at a time for her), and is told so.
    assert jobs_queue.where(redis_client, ask("alice", "three")) == "waiting for your other questions to finish"
    first.job.set_status("started")  # a worker took it at once: it is not waiting at all
    assert jobs_queue.where(redis_client, jobs_queue.Enqueued(first.job, None)) == "started"


def test_images_build_without_a_registry_names_offline() -> None:
    """Not Docker's raw "lookup <the registry's host> … no such host" in a build log: one line
    naming --offline. The base names a registry on a closed loopback port (no traffic leaves
    this machine), the way an unreachable Docker Hub looks to the daemon."""
    base = f"127.0.0.1:{free_port()}/askbox-test/no-such-base:1"
    result = askbox("images", "build", "sandbox", "--base", base)
    assert result.returncode == 1
    line = one_line(result)
    assert f"cannot pull the base image {base}: no container registry reachable" in line
    assert "askbox images build --offline" in line


# -- issue 21: the first hour -------------------------------------------------------------


def test_worker_warns_at_start_of_a_repository_it_cannot_see(redis_client, built_images, egress_root, tmp_path) -> None:
    """Under compose only ASKBOX_REPOS_DIR is mounted into the worker: a repository
    configured elsewhere is named at start, with the folder and the fix, not found missing
    at the first question."""
    inside = tmp_path / "repos" / "web"
    inside.mkdir(parents=True)
    repos = json.dumps({"web": str(inside), "home": "/home/me/project", "gone": str(tmp_path / "repos" / "gone")})
    result = askbox(
        "worker",
        "--burst",
        ASKBOX_REDIS_URL=REDIS_TEST_URL,
        ASKBOX_EGRESS_SOCKET_DIR=str(egress_root),
        ASKBOX_AGENT="gemini",
        ASKBOX_REPOS=repos,
        ASKBOX_REPOS_DIR=str(tmp_path / "repos"),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"repository home: /home/me/project is outside ASKBOX_REPOS_DIR ({tmp_path / 'repos'})" in result.stderr, (
        result.stderr[-3000:]
    )
    assert f"repository gone: {tmp_path / 'repos' / 'gone'} does not exist here" in result.stderr
    assert "repository web:" not in result.stderr


def test_a_question_about_a_repository_outside_repos_dir_says_why(tmp_path) -> None:
    """Not "does not exist on this worker": the folder it must be in, and the fix."""
    result = askbox(
        "ask",
        "--inline",
        "--agent",
        "gemini",
        "--repo",
        "web",
        "hello",
        ASKBOX_REPOS=json.dumps({"web": str(tmp_path)}),
        ASKBOX_REPOS_DIR="/srv/repos",
    )
    line = one_line(result)
    assert result.returncode == 2
    assert f"configured at {tmp_path}, outside ASKBOX_REPOS_DIR (/srv/repos)" in line
    assert "set ASKBOX_REPOS_DIR to the folder that holds it" in line


def test_ask_reads_a_question_from_stdin_or_a_file(tmp_path) -> None:
    """--explain prints the prompt: the question read from stdin (`-`) or --file is in it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for argv in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "empty"]):
        subprocess.run([*git, *argv], check=True, capture_output=True)
    for args, given in ((["-"], "from stdin: where is main?"), (["--file", str(tmp_path / "q.txt")], None)):
        (tmp_path / "q.txt").write_text("from a file: where is main?\n")
        result = subprocess.run(
            [ASKBOX, "ask", "--explain", "--repo", str(repo), *args],
            input=given or "",
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert (given or "from a file: where is main?") in result.stdout


def test_a_long_question_is_refused_without_being_echoed(tmp_path) -> None:
    """A 100 KB question (from a file: an argument that long is the shell's problem) ends in
    one short line, not the question repeated back."""
    question = tmp_path / "long.txt"
    question.write_text("why" * 33_333 + "?")
    result = askbox("ask", "--repo", "demo", "--file", str(question), ASKBOX_REDIS_URL=REDIS_TEST_URL)
    line = one_line(result)
    assert result.returncode == 2 and len(result.stderr) < 300, result.stderr[:500]
    assert "the question is 100,000 characters; a queued question may have at most 8,000" in line


def test_ask_help_states_the_real_defaults() -> None:
    """In compose the worker decides the repository and the agent, not this process."""
    text = " ".join(askbox("ask", "--help").stdout.split())
    assert "default: here" not in text and "ASKBOX_AGENT or cursor" not in text
    assert "Default: with --inline this directory, else the worker's only repository" in text
    assert "default: the worker's (its ASKBOX_AGENT; unset: cursor where it can run, else gemini)" in text
    assert "`-` (or nothing, piped) reads it from stdin" in text and "--file" in text


def test_the_gateway_without_redis_stops_at_once(tmp_path) -> None:
    """The README's venv path once forgot Redis: the gateway waited 21 s, then failed."""
    started = time.monotonic()
    result = askbox(
        "gateway",
        GEMINI_API_KEY="k",
        ASKBOX_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        ASKBOX_GATEWAY_SOCKET_DIR=str(tmp_path),
    )
    assert result.returncode == 1 and time.monotonic() - started < 8, result.stderr
    assert "not reachable" in result.stderr and "ASKBOX_REDIS_URL" in result.stderr


def test_an_unbuildable_agent_image_leaves_no_build_container(docker_client, built_images, tmp_path) -> None:
    """agent-cursor cannot be built where its downloads are unreachable. Each try used to
    leave the failed step's container behind (compose's images service tried on every
    `up`): a failed build now removes it.

    Nothing leaves this machine: the base is the offline one (no pull), and Docker's
    client proxy setting, which docker-py passes to every build step as http(s)_proxy
    (as a user behind a corporate proxy has it), names a closed port on the build
    container's own loopback, so the step's apt-get and curl fail at once."""
    closed = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "config.json").write_text(
        json.dumps({"proxies": {"default": {"httpProxy": closed, "httpsProxy": closed}}})
    )
    # --missing: the sandbox parent is built already (and is not rebuilt under other tests).
    base = images.OFFLINE_BASE if images.present(docker_client, images.OFFLINE_BASE) else images.DEFAULT_BASE
    before = {c.id for c in docker_client.containers.list(all=True)}
    result = askbox(
        "images", "build", "agent-cursor", "--missing", "--base", base, timeout=600, DOCKER_CONFIG=str(tmp_path)
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert (
        "building askbox/agent-cursor" in result.stderr and "failed (cursor-agent is only distributed" in result.stderr
    )
    new = [c for c in docker_client.containers.list(all=True) if c.id not in before]
    steps = [c for c in new if any(s in " ".join(c.attrs["Config"].get("Cmd") or []) for s in AGENT_CURSOR_STEPS)]
    assert steps == [], [c.short_id for c in steps]


def test_build_everything_skips_agent_cursor_without_its_key() -> None:
    """Compose's images service runs `images build --missing` on every `up`: without
    CURSOR_API_KEY the cursor agent cannot answer, so its image is not tried."""
    base = f"127.0.0.1:{free_port()}/askbox-test/no-such-base:1"  # a closed loopback port: nothing leaves
    result = askbox("images", "build", "--missing", "--base", base, timeout=300)
    assert "skipping agent-cursor: CURSOR_API_KEY is not set" in result.stderr, result.stderr[-2000:]
