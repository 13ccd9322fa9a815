"""Jobs forged into Redis, the way anyone who can write to it would, against a real `askbox worker`.

RQ stores a job's function and callbacks as dotted paths, and a plain RQ worker imports
and calls whatever they name: RQ's JSON serializer keeps pickle out, not code. Each
attack here is one that ran on main: ``os.system`` enqueued through RQ's own API and
written as a raw job hash on every askbox queue, callbacks naming foreign code (in the
work-horse and in the maintenance that fails abandoned jobs), and a terminal question
asking for ``/`` or ``/etc`` as its repository. The worker must refuse each before it
imports anything, say so in its log, and keep answering real questions.

The "foreign code" callbacks name a module of the test's own, put on the worker's
``PYTHONPATH``, that leaves a marker when it is merely *imported*: ``os.system`` as a
failure callback would be imported and then fail on its arguments, so only an import
with a visible side effect shows that nothing was imported at all.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from redis import Redis
from rq import Callback, Queue
from rq.job import JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from jobs import queue as jobs_queue
from jobs.question import Origin, Question
from jobs.settings import JobSettings
from sandbox import labels
from tests.conftest import DEPLOYMENT
from tests.integration.pipeline_helpers import Workers, wait_final, wait_for, worker_env

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.usefixtures("no_leftovers")]
QUICK = "[transcript:subagent-sleep-v2]"  # about 1.6 s of recorded cursor-agent output
EVIL_MODULE = "askbox_forged_payload"  # on the worker's PYTHONPATH only


@pytest.fixture()
def markers(tmp_path: Path) -> Path:
    """Where forged code would leave its traces, and the module that leaves one on import."""
    found = tmp_path / "markers"
    found.mkdir()
    code = tmp_path / "evil-code"
    code.mkdir()
    (code / f"{EVIL_MODULE}.py").write_text(
        "import os, pathlib, uuid\n"
        f"pathlib.Path({str(found)!r}, 'imported-' + uuid.uuid4().hex).touch()\n"
        "def hook(*args, **kwargs):\n"
        f"    pathlib.Path({str(found)!r}, 'called-' + uuid.uuid4().hex).touch()\n"
    )
    return found


@pytest.fixture()
def workers(redis_server, cursor_standin_image, egress_root, repo, markers, tmp_path) -> Iterator[Workers]:
    env = worker_env(
        redis_server,
        repo,
        egress_root,
        ASKBOX_AGENT="cursor",
        ASKBOX_CURSOR_IMAGE=cursor_standin_image,
        CURSOR_API_KEY="key-for-the-standin",
        ASKBOX_MAINTENANCE_INTERVAL="5",
        ASKBOX_RETRIES="0",
        # The forged callbacks' module is importable by the worker, as any installed module is.
        PYTHONPATH=str(tmp_path / "evil-code"),
    )
    for inherited in ("ASKBOX_ALLOW_REPO_PATHS", "SLACK_BOT_TOKEN"):  # the default: off; no Slack
        env.pop(inherited, None)
    pool = Workers(env)
    yield pool
    pool.stop()


def _question(text: str, repo: str = "demo", **kwargs: object) -> Question:
    return Question(origin=Origin(kind="terminal", user="alice"), text=text, repo=repo, **kwargs)


def _real_question(redis: Redis) -> str:
    """A question on the last queue served: answered only after every forged job was taken."""
    question = _question(f"{QUICK} where is answer()?", priority="low")
    return jobs_queue.enqueue(redis, question, JobSettings()).job.id


def _raw_job(redis: Redis, queue: str, data: list, **fields: str) -> str:
    """A job written as a bare hash plus a queue entry: no RQ client code involved."""
    job_id = f"raw-{uuid.uuid4().hex[:10]}"
    redis.hset(
        f"rq:job:{job_id}",
        mapping={
            "data": json.dumps(data),
            "origin": queue,
            "status": "queued",
            "created_at": "2024-01-01T00:00:00.000000Z",
            "enqueued_at": "2024-01-01T00:00:00.000000Z",
            **fields,
        },
    )
    redis.rpush(f"rq:queue:{queue}", job_id)
    return job_id


@pytest.fixture()
def webhook_sink() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server of the test's own on loopback: where forged webhooks would land."""
    hits: list[str] = []

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(204)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


def _log(workers: Workers) -> str:
    return "\n".join(log.read_text() for log in workers.logs if log.exists())


def _refusals(workers: Workers) -> dict[str, str]:
    """The worker's refusal lines (JSON logs), joined by job id."""
    found: dict[str, str] = {}
    for line in _log(workers).splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("message", "").startswith("refused job"):
            job_id = record.get("job_id", "")
            found[job_id] = found.get(job_id, "") + record["message"] + "\n"
    return found


def _assert_failed_untouched(redis: Redis, job_ids: list[str]) -> None:
    for job_id in job_ids:
        assert redis.hget(f"rq:job:{job_id}", "status") == JobStatus.FAILED.value.encode(), job_id
        queue = redis.hget(f"rq:job:{job_id}", "origin").decode()
        assert job_id in FailedJobRegistry(queue, connection=redis), job_id
    for name in jobs_queue.QUEUE_NAMES:
        assert redis.llen(f"rq:queue:{name}") == 0


def _sandboxes_created(client: docker.DockerClient, since: float, job_id: str) -> list[str]:
    """The sandboxes Docker created for ``job_id`` (its run id) since ``since`` (the worker's
    own egress self-test at start-up runs a sandbox of its own, not this job's)."""
    filters = {
        "type": "container",
        "event": "create",
        "label": [f"{labels.SANDBOX}={DEPLOYMENT}", f"{labels.RUN_ID}={job_id}"],
    }
    events = client.events(since=int(since), until=int(time.time()) + 1, decode=True, filters=filters)
    return [e["id"] for e in events]


def test_forged_functions_on_every_queue_are_refused(redis, workers, markers, tmp_path):
    forged: dict[str, str] = {}  # job id -> the function it names
    for name in jobs_queue.QUEUE_NAMES:
        queue = Queue(name, connection=redis, serializer=JSONSerializer)
        job = queue.enqueue("os.system", f"touch {markers}/os-system-{name}")
        forged[job.id] = "os.system"
        raw = _raw_job(redis, name, ["os.system", None, [f"touch {markers}/raw-{name}"], {}])
        forged[raw] = "os.system"
        # A module of code that runs when imported: refused before the import, not after.
        forged[_raw_job(redis, name, [f"{EVIL_MODULE}.hook", None, [], {}])] = f"{EVIL_MODULE}.hook"
        # The right name on another object: RQ would call getattr(instance, name).
        forged[_raw_job(redis, name, ["format", "{0.__class__}", [], {}])] = "format"
    real = _real_question(redis)

    workers.start(1, log_dir=tmp_path)
    final = wait_final(redis, real, 90, workers)

    assert final["kind"] == "answer", workers.tail()  # the worker kept serving
    assert sorted(p.name for p in markers.iterdir()) == []  # nothing forged ran, nothing was imported
    refused = _refusals(workers)
    for job_id, function in forged.items():
        assert job_id in refused, f"no refusal logged for {job_id}\n{workers.tail()}"
        assert repr(function) in refused[job_id]
    _assert_failed_untouched(redis, list(forged))


def test_forged_callbacks_are_refused_without_import(redis, workers, markers, webhook_sink, tmp_path):
    evil = f"{EVIL_MODULE}.hook"
    sink, hits = webhook_sink
    queue = Queue("askbox-default", connection=redis, serializer=JSONSerializer)
    payload = _question(f"{QUICK} hi").model_dump(mode="json")
    forged = {
        # Our function, a foreign failure callback: on main the question's failure ran it.
        queue.enqueue_call(jobs_queue.JOB_FUNCTION, args=({"not": "a question"},), on_failure=Callback(evil)).id: evil,
        queue.enqueue_call(
            jobs_queue.JOB_FUNCTION, args=({"not": "a question"},), on_failure=Callback("os.system")
        ).id: "os.system",
        queue.enqueue_call(jobs_queue.JOB_FUNCTION, args=(payload,), on_success=Callback(evil)).id: evil,
        queue.enqueue_call(jobs_queue.JOB_FUNCTION, args=(payload,), on_stopped=Callback(evil)).id: evil,
        _raw_job(
            redis, "askbox-high", [jobs_queue.JOB_FUNCTION, None, [payload], {}], failure_callback_name=evil
        ): evil,
        # No import, but the worker would request any URL with any headers for the job.
        _raw_job(
            redis,
            "askbox-high",
            [jobs_queue.JOB_FUNCTION, None, [payload], {}],
            webhooks=json.dumps([{"url": f"{sink}/finished", "job_status": "finished", "method": "POST"}]),
        ): "webhooks",
    }
    # An abandoned job: the maintenance that fails it calls its failure callback in the
    # worker's main process (RQ's StartedJobRegistry.cleanup), no work-horse involved.
    abandoned = _raw_job(
        redis,
        "askbox-low",
        ["os.system", None, ["true"], {}],
        status="started",
        failure_callback_name=evil,
        webhooks=json.dumps([{"url": f"{sink}/failed", "job_status": "failed"}]),
    )
    redis.lrem("rq:queue:askbox-low", 0, abandoned)
    redis.zadd("rq:wip:askbox-low", {f"{abandoned}:exec1": 1})
    real = _real_question(redis)

    workers.start(1, log_dir=tmp_path)
    final = wait_final(redis, real, 90, workers)
    wait_for(
        lambda: redis.hget(f"rq:job:{abandoned}", "status") == b"failed", 30, "maintenance to fail the abandoned job"
    )

    assert final["kind"] == "answer", workers.tail()
    assert sorted(p.name for p in markers.iterdir()) == [], workers.tail()
    assert hits == []
    refused = _refusals(workers)
    for job_id, named in {**forged, abandoned: "'os.system'"}.items():
        assert job_id in refused, f"no refusal logged for {job_id}\n{workers.tail()}"
        assert named in refused[job_id], refused[job_id]
    _assert_failed_untouched(redis, list(forged))


@pytest.mark.parametrize("path", ["/", "/etc"])
def test_forged_terminal_question_naming_a_host_path_is_rejected(redis, workers, docker_client, path, tmp_path):
    asked = time.time()
    job_id = jobs_queue.enqueue(redis, _question(f"{QUICK} cat passwd", repo=path), JobSettings()).job.id
    workers.start(1, log_dir=tmp_path)
    final = wait_final(redis, job_id, 60, workers)
    assert final["kind"] == "rejected", final
    assert final["text"].startswith(f"Repository paths are not accepted here ('{path}')"), final["text"]
    assert _sandboxes_created(docker_client, asked, job_id) == []
    # Exactly one final message for it.
    assert len(redis.keys(f"askbox:final:{job_id}*")) == 1


def test_allowed_repo_paths_are_the_workers_setting(redis, workers, repo, docker_client, tmp_path):
    """ASKBOX_ALLOW_REPO_PATHS on the worker: a terminal question may then name a directory;
    a Slack question never may, whatever its payload says."""
    workers.env["ASKBOX_ALLOW_REPO_PATHS"] = "true"
    workers.start(1, log_dir=tmp_path)
    by_path = jobs_queue.enqueue(redis, _question(f"{QUICK} where?", repo=str(repo)), JobSettings()).job.id
    assert wait_final(redis, by_path, 90, workers)["kind"] == "answer", workers.tail()
    # A Slack question asking for a path, as a forger would write it (no Slack token: the
    # worker still records the final message in the job's meta).
    origin = Origin(kind="slack", user="U1", team="T1", channel="C1", thread_ts="1.1", message_ts="1.1")
    asked = time.time()
    slack = jobs_queue.enqueue(redis, Question(origin=origin, text="x", repo="/etc"), JobSettings()).job.id
    final = wait_final(redis, slack, 60, workers)
    assert final["kind"] == "rejected" and "not accepted" in final["text"], final
    assert _sandboxes_created(docker_client, asked, slack) == []
