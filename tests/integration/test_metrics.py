"""Worker metrics in prometheus_client's multiprocess mode, against a real Redis.

The scenario runs in its own interpreter (this module run with ``-m``) because the mode
must be chosen before prometheus_client is first imported: the pytest process may have
imported it already. The pytest side drives it over stdin/stdout and scrapes ``/metrics``
over HTTP like Prometheus would; it never imports prometheus_client itself.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import redis
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs.worker_pubsub import PromptUnsubscribe
from tests.conftest import REDIS_TEST_URL

QUEUE_NAMES = ("askbox-high", "askbox-default", "askbox-low")
ROOT = Path(__file__).resolve().parents[2]
PREFIX = "@@"  # marks protocol lines among whatever RQ prints
STEP_TIMEOUT = 30.0


# --- runs inside RQ's forked work-horse -------------------------------------------------


def record_in_horse() -> int:
    from rq import get_current_job

    from jobs import metrics

    job = get_current_job()
    assert job is not None and job.started_at and job.enqueued_at
    metrics.QUEUE_WAIT.observe((job.started_at - job.enqueued_at).total_seconds())
    metrics.count_question("cached")
    # Left counted on purpose, as if the horse died mid-run: the parent's
    # mark_process_dead must stop counting it.
    metrics.RUNNING_SANDBOXES.inc()
    return os.getpid()


class MetricsWorker(PromptUnsubscribe, Worker):
    """The hook jobs/metrics.py documents for the worker."""

    def monitor_work_horse(self, job, queue, execution):  # type: ignore[no-untyped-def]
        from jobs import metrics

        pid = self.horse_pid
        try:
            super().monitor_work_horse(job, queue, execution)
        finally:
            metrics.mark_process_dead(pid)


# --- the scenario process ---------------------------------------------------------------


def _emit(**fields: object) -> None:
    print(PREFIX + json.dumps(fields), flush=True)


def _wait_for(command: str) -> None:
    line = sys.stdin.readline().strip()
    if line != command:
        raise SystemExit(f"expected {command!r}, got {line!r}")


def _scenario(prom_dir: Path) -> None:
    from jobs import logs, metrics

    metrics.setup_multiprocess(prom_dir)
    logs.configure_json_logging("WARNING")  # RQ then prints nothing of its own on stdout
    conn = redis.Redis.from_url(REDIS_TEST_URL)
    server = metrics.serve_metrics(0, conn, QUEUE_NAMES)
    _emit(port=server.port, pid=os.getpid())

    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            # Only the parent keeps these ends: if it dies, the read below sees EOF.
            os.close(go_w)
            os.close(ready_r)
            metrics.count_question("answer")
            metrics.count_question("answer")
            metrics.QUESTIONS.labels(outcome="timeout").inc()
            metrics.RUNNING_SANDBOXES.inc()
            metrics.QUEUE_WAIT.observe(1.5)
            metrics.CONTAINER_START.observe(0.3)
            metrics.AGENT_TIME.observe(12)
            metrics.RETRIES.inc()
            metrics.REAPED.inc(2)
            os.write(ready_w, b"1")
            os.read(go_r, 1)  # stay alive, sandbox counted, until the test has looked
        finally:
            os._exit(0)
    os.close(go_r)
    os.close(ready_w)
    os.read(ready_r, 1)
    _emit(phase="child-alive", child=child)

    _wait_for("release")
    os.write(go_w, b"1")
    os.waitpid(child, 0)
    metrics.mark_process_dead(child)
    _emit(phase="child-dead")

    _wait_for("work")
    low = Queue("askbox-low", connection=conn, serializer=JSONSerializer)
    MetricsWorker([low], connection=conn, serializer=JSONSerializer).work(burst=True)
    _emit(phase="worked")

    _wait_for("quit")
    server.close()


# --- the test side ----------------------------------------------------------------------


class Scenario:
    def __init__(self, prom_dir: Path, stderr_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.test_metrics", str(prom_dir)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                self._lines.put(line[len(PREFIX) :])
        self._lines.put(None)

    def expect(self) -> dict:
        try:
            line = self._lines.get(timeout=STEP_TIMEOUT)
        except queue.Empty:
            line = None
        if line is None:
            self.proc.kill()
            raise AssertionError(f"scenario stopped or hung; stderr:\n{self.stderr_path.read_text()[-4000:]}")
        return json.loads(line)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # a scenario still waiting for a command stops at EOF
        try:
            self.proc.wait(timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"unparseable exposition line: {line!r}"
        name, labels, value = match.groups()
        samples[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} not exposed; have {sorted({n for n, _ in samples})}"
    return samples[key]


def enqueue(conn: redis.Redis, queue_name: str) -> Job:
    q = Queue(queue_name, connection=conn, serializer=JSONSerializer)
    return q.enqueue("tests.integration.test_metrics.record_in_horse")


def test_metrics_aggregate_over_forked_processes(redis_client, tmp_path):
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    stale = prom_dir / "counter_999999.db"
    stale.write_bytes(b"left by an earlier run")
    for name in ("askbox-default", "askbox-default", "askbox-high"):
        enqueue(redis_client, name)
    low_job = enqueue(redis_client, "askbox-low")

    run = Scenario(prom_dir, tmp_path / "scenario.stderr")
    try:
        started = run.expect()
        port, server_pid = started["port"], started["pid"]
        assert not stale.exists(), "setup_multiprocess must remove a previous run's files"

        # A forked child recorded everything and is still running.
        alive = run.expect()
        assert alive["phase"] == "child-alive" and alive["child"] != server_pid
        s = scrape(port)
        assert value(s, "askbox_questions_total", outcome="answer") == 2
        assert value(s, "askbox_questions_total", outcome="timeout") == 1
        assert value(s, "askbox_questions_total", outcome="oom") == 0  # known outcomes exist at 0
        assert value(s, "askbox_feedback_total", vote="up") == 0
        assert value(s, "askbox_running_sandboxes") == 1
        assert value(s, "askbox_queue_wait_seconds_count") == 1
        assert value(s, "askbox_queue_wait_seconds_sum") == 1.5
        assert value(s, "askbox_queue_wait_seconds_bucket", le="1.0") == 0
        assert value(s, "askbox_queue_wait_seconds_bucket", le="2.5") == 1
        assert value(s, "askbox_container_start_seconds_count") == 1
        assert value(s, "askbox_agent_seconds_sum") == 12
        assert value(s, "askbox_retries_total") == 1
        assert value(s, "askbox_reaped_containers_total") == 2
        assert value(s, "askbox_queue_depth", queue="askbox-high") == 1
        assert value(s, "askbox_queue_depth", queue="askbox-default") == 2
        assert value(s, "askbox_queue_depth", queue="askbox-low") == 1

        # The child exits: its counts stay, its live gauge goes.
        run.send("release")
        assert run.expect()["phase"] == "child-dead"
        enqueue(redis_client, "askbox-default")  # depth is read from Redis at scrape time
        s = scrape(port)
        assert value(s, "askbox_running_sandboxes") == 0
        assert value(s, "askbox_questions_total", outcome="answer") == 2
        assert value(s, "askbox_queue_depth", queue="askbox-default") == 3

        # A real forking RQ worker runs a JSON-serialized job in its work-horse.
        run.send("work")
        assert run.expect()["phase"] == "worked"
        low_job.refresh()
        assert low_job.get_status() == JobStatus.FINISHED
        horse = low_job.return_value()
        assert isinstance(horse, int) and horse not in (server_pid, alive["child"])
        s = scrape(port)
        assert value(s, "askbox_questions_total", outcome="cached") == 1
        assert value(s, "askbox_queue_wait_seconds_count") == 2
        assert value(s, "askbox_running_sandboxes") == 0  # the horse left it at 1 and died
        assert value(s, "askbox_queue_depth", queue="askbox-low") == 0
        run.send("quit")
    finally:
        run.close()
    assert run.proc.returncode == 0, run.stderr_path.read_text()[-4000:]


def test_setup_refuses_after_prometheus_client_import(tmp_path):
    code = (
        "import prometheus_client\n"
        "from pathlib import Path\n"
        "from jobs.metrics import setup_multiprocess\n"
        f"setup_multiprocess(Path({str(tmp_path / 'prom')!r}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "RuntimeError: prometheus_client was imported before setup_multiprocess()" in done.stderr


if __name__ == "__main__":
    _scenario(Path(sys.argv[1]))
