"""Deadlines, cancellation, clean-up, bounded memory and infrastructure faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sandbox import OutcomeKind, Sandbox, SandboxSpec, labels
from sandbox.reaper import reap
from tests.conftest import DEPLOYMENT, sandbox_containers
from tests.integration.sandbox_helpers import run_cmd

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leftovers")]
ROOT = Path(__file__).resolve().parents[2]


def test_ok_and_exit_code_with_stderr_tail(sandbox, sandbox_image):
    outcome, out, err = run_cmd(sandbox, sandbox_image, "echo out; echo oops >&2; exit 7")
    assert (outcome.kind, outcome.exit_code, out) == (OutcomeKind.EXIT_ERROR, 7, "out")
    assert outcome.stderr_tail == "oops" and err == "oops"
    assert outcome.cli_exit_code() == 7


def test_endless_job_killed_at_deadline(sandbox, sandbox_image):
    started = time.monotonic()
    outcome, out, _ = run_cmd(sandbox, sandbox_image, "echo begun; exec sleep 1000", timeout=3)
    elapsed = time.monotonic() - started
    assert outcome.kind is OutcomeKind.TIMEOUT and out == "begun"
    print(f"deadline 3 s: outcome after {outcome.duration:.2f} s, returned after {elapsed:.2f} s")
    assert 3 <= outcome.duration < 5 and elapsed < 6
    assert outcome.cli_exit_code() == 124


def test_cancel_from_another_thread(sandbox, sandbox_image, docker_client):
    spec = SandboxSpec(image=sandbox_image, command=["bash", "-c", "echo ready; sleep 1000"])
    with sandbox.run(spec) as run:
        lines = iter(run)
        assert next(lines).text == "ready"
        cancelled_at = time.monotonic()
        threading.Timer(0.2, run.cancel).start()
        assert list(lines) == []
    gone_after = time.monotonic() - cancelled_at
    assert run.outcome.kind is OutcomeKind.CANCELLED
    assert sandbox_containers(docker_client) == []
    print(f"cancelled container gone {gone_after:.2f} s after cancel")
    assert gone_after < 5


def test_cancel_from_another_process(sandbox, sandbox_image, docker_client):
    spec = SandboxSpec(image=sandbox_image, command=["bash", "-c", "echo ready; sleep 1000"])
    with sandbox.run(spec) as run:
        lines = iter(run)
        assert next(lines).text == "ready"
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-c", f"from sandbox import Sandbox; assert Sandbox().cancel({spec.run_id!r})"],
            check=True,
            cwd=ROOT,
        )
        list(lines)
    assert run.outcome.kind is OutcomeKind.CANCELLED
    assert run.outcome.message == "killed from outside"  # Docker's event log has the kill: not read as OOM
    assert time.monotonic() - started < 5


def test_container_removed_when_caller_raises(sandbox, sandbox_image, docker_client):
    spec = SandboxSpec(image=sandbox_image, command=["bash", "-c", "echo one; sleep 1000"])
    with pytest.raises(ZeroDivisionError):
        with sandbox.run(spec) as run:
            for _ in run:
                _ = 1 / 0  # the caller's own code fails mid-run
    assert run.outcome.kind is OutcomeKind.CANCELLED
    assert sandbox_containers(docker_client) == []


def test_stop_after_what_we_need_is_ok(sandbox, sandbox_image):
    """cursor-agent may not exit after its result: the caller stops it and that is success."""
    spec = SandboxSpec(image=sandbox_image, command=["bash", "-c", "echo result; exec sleep 1000"])
    with sandbox.run(spec) as run:
        for line in run:
            if line.text == "result":
                run.stop()
    assert run.outcome.kind is OutcomeKind.OK and run.outcome.stopped_early


@pytest.mark.parametrize(
    "script, expect_lines, expect_truncated",
    [
        ("head -c 100000000 /dev/urandom | base64 -w 100", 1_333_334, 0),  # 100 MB, base64: 133 MB in lines
        ("head -c 100000000 /dev/zero | tr '\\0' a; echo; echo after", 2, 1),  # one 100 MB line
    ],
    ids=["many-lines", "one-huge-line"],
)
def test_100_mb_of_output_keeps_our_memory_bounded(sandbox_image, script, expect_lines, expect_truncated):
    probe = subprocess.run(
        [sys.executable, str(ROOT / "tests/integration/output_memory_probe.py"), sandbox_image, script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr
    baseline, peak, count, truncated, kind = probe.stdout.split()
    growth_mb = (int(peak) - int(baseline)) / 1024
    print(f"{script!r}: {count} lines, peak RSS growth {growth_mb:.1f} MB")
    assert kind == "ok"
    assert int(count) == expect_lines  # not one line lost
    assert int(truncated) == expect_truncated
    assert growth_mb < 8


def test_missing_image_is_an_infra_error_naming_the_fix(sandbox):
    run = sandbox.run(SandboxSpec(image="askbox/does-not-exist:0", command=["true"]))
    assert run.wait().kind is OutcomeKind.INFRA_ERROR
    assert "askbox images build" in run.outcome.message


def test_missing_runtime_is_an_infra_error(sandbox, sandbox_image):
    run = sandbox.run(SandboxSpec(image=sandbox_image, command=["true"], runtime="runsc-not-installed"))
    outcome = run.wait()
    assert outcome.kind is OutcomeKind.INFRA_ERROR and "gVisor" in outcome.message


def test_dead_docker_daemon_is_an_infra_error(sandbox_image, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    outcome = Sandbox(deployment=DEPLOYMENT).run(SandboxSpec(image=sandbox_image, command=["true"])).wait()
    assert outcome.kind is OutcomeKind.INFRA_ERROR
    assert "Docker daemon not reachable" in outcome.message and "DOCKER_HOST" in outcome.message


def test_reaper_removes_orphan_of_a_killed_process(docker_client, sandbox_image):
    code = (
        "import sys\n"
        "from sandbox import Sandbox, SandboxSpec\n"
        f"run = Sandbox(deployment={DEPLOYMENT!r}).run(SandboxSpec(image={sandbox_image!r}, command=['bash','-c','echo up; sleep 1000']))\n"
        "print(run.spec.run_id, flush=True)\n"
        "for line in run:\n"
        "    print(line.text, flush=True)\n"
    )
    orphan_maker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    run_id = orphan_maker.stdout.readline().strip()
    assert orphan_maker.stdout.readline().strip() == "up"
    os.kill(orphan_maker.pid, signal.SIGKILL)  # like a worker killed mid-job
    orphan_maker.wait()
    orphans = docker_client.containers.list(filters={"label": f"{labels.RUN_ID}={run_id}"})
    assert len(orphans) == 1  # still running: nobody removed it
    # A live run of ours must survive the same reaper pass.
    spec = SandboxSpec(image=sandbox_image, command=["bash", "-c", "echo alive; sleep 1000"])
    with Sandbox(docker_client, deployment=DEPLOYMENT).run(spec) as live:
        lines = iter(live)
        assert next(lines).text == "alive"
        assert reap(docker_client, deployment=DEPLOYMENT) == [run_id]
        assert [c.attrs["Labels"][labels.RUN_ID] for c in sandbox_containers(docker_client)] == [spec.run_id]
        live.cancel()
        list(lines)
