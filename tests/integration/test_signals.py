"""SIGTERM (systemd, `docker stop`, `kill`) to a process that owns a sandbox removes the
sandbox within seconds, instead of leaving it until its deadline: `askbox sandbox run`,
`askbox ask --inline`, and a worker whose running question outlasts its shutdown grace."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from jobs import queue as jobs_queue
from jobs.question import Origin, Question
from jobs.settings import JobSettings
from tests.conftest import sandbox_containers
from tests.integration.pipeline_helpers import ASKBOX, Workers, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leftovers")]
SLOW = "[transcript:direct-sleep]"  # about 4.7 s of recorded cursor-agent output


def terminate_and_time(proc: subprocess.Popen, docker_client, what: str) -> float:
    """SIGTERM ``proc`` once its sandbox runs; seconds until the sandbox is gone."""
    wait_for(lambda: sandbox_containers(docker_client), 60, f"{what}'s sandbox to start")
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    wait_for(lambda: not sandbox_containers(docker_client), 20, f"{what}'s sandbox to be removed after SIGTERM")
    return time.monotonic() - sent


def test_sigterm_to_sandbox_run_removes_the_sandbox(docker_client, sandbox_image, repo):
    proc = subprocess.Popen(
        [
            ASKBOX,
            "sandbox",
            "run",
            "--repo",
            str(repo),
            "--image",
            sandbox_image,
            "--timeout",
            "600",
            "--",
            "sleep",
            "600",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    took = terminate_and_time(proc, docker_client, "sandbox run")
    _, stderr = proc.communicate(timeout=20)
    assert "cancelled" in stderr.splitlines()[-1], stderr
    print(f"askbox sandbox run: sandbox removed {took:.1f} s after SIGTERM, exit {proc.returncode}")


@pytest.mark.redis
def test_sighup_and_sigterm_to_ask_inline_remove_the_sandbox(
    docker_client, cursor_standin_image, egress_root, repo, redis_server
):
    env = {
        **os.environ,
        "ASKBOX_AGENT": "cursor",
        "ASKBOX_CURSOR_IMAGE": cursor_standin_image,
        "CURSOR_API_KEY": "key-for-the-standin",
        "ASKBOX_EGRESS_SOCKET_DIR": str(egress_root),
        "ASKBOX_REDIS_URL": redis_server.url,
    }
    proc = subprocess.Popen(
        [ASKBOX, "ask", "--inline", "--agent", "cursor", "--repo", str(repo), f"{SLOW} {SLOW} {SLOW}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    took = terminate_and_time(proc, docker_client, "ask --inline")
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "cancelled" in stderr, stderr
    assert stdout == ""  # no answer printed: it was stopped
    print(f"askbox ask --inline: sandbox removed {took:.1f} s after SIGTERM")


@pytest.mark.redis
def test_sigterm_to_a_worker_removes_the_sandbox_after_its_grace(
    docker_client, redis, redis_server, cursor_standin_image, egress_root, repo, tmp_path
):
    env = {
        **os.environ,
        "ASKBOX_REDIS_URL": redis_server.url,
        "ASKBOX_AGENT": "cursor",
        "ASKBOX_CURSOR_IMAGE": cursor_standin_image,
        "CURSOR_API_KEY": "key-for-the-standin",
        "ASKBOX_EGRESS_SOCKET_DIR": str(egress_root),
        "ASKBOX_REPOS": f'{{"demo": "{repo}"}}',
        "ASKBOX_SHUTDOWN_GRACE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    question = Question(origin=Origin(kind="terminal", user="alice"), text=f"{SLOW} {SLOW} {SLOW}", repo="demo")
    job_id = jobs_queue.enqueue(redis, question, JobSettings()).job.id
    pool = Workers(env)
    [worker] = pool.start(1, log_dir=tmp_path)
    try:
        took = terminate_and_time(worker, docker_client, "the worker")
        assert worker.wait(timeout=20) is not None, pool.tail()
    finally:
        pool.stop()
    assert "shutdown grace of 1 s over" in pool.tail(200)
    assert jobs_queue.fetch(redis, job_id).get_meta(refresh=True).get("final") is None  # cut off, not answered
    print(f"askbox worker: sandbox removed {took:.1f} s after SIGTERM (grace 1 s)")
