"""The dashboard as a person sees it: a real headless Chromium against the real app, a
real Redis and jobs run by a real RQ worker with the JSON serializer."""

from __future__ import annotations

import base64
import contextlib
import html
import http.server
import json
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest
import redis
from flask import Flask
from pydantic import ValidationError
from rq import Queue, SimpleWorker, Worker, get_current_job
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from bot.dashboard import DashboardSettings, build_dashboard_app, make_dashboard_server
from jobs.worker_pubsub import PromptUnsubscribe
from tests.conftest import unavailable

USER, PASSWORD = "ops", "s3cret-pw"
QUEUE_NAMES = ("askbox-high", "askbox-default", "askbox-low")
PROGRESS = ["cloned repository", "agent answered"]


def add(a: int, b: int) -> int:
    """The job: records progress in meta the way askbox's job does."""
    job = get_current_job()
    assert job is not None
    job.meta["progress"] = PROGRESS
    job.meta["final"] = {"outcome": "answer"}
    job.save_meta()
    return a + b


class BurstWorker(PromptUnsubscribe, SimpleWorker):
    """RQ's in-process worker, leaving its command channel at once (jobs/worker_pubsub.py)."""


@pytest.fixture()
def jobs(redis_client: redis.Redis) -> dict[str, Job]:
    """A finished job on askbox-default, one waiting on each other queue."""
    queues = {name: Queue(name, connection=redis_client, serializer=JSONSerializer) for name in QUEUE_NAMES}
    finished = queues["askbox-default"].enqueue("tests.integration.test_dashboard.add", 2, 3)
    waiting_high = queues["askbox-high"].enqueue("tests.integration.test_dashboard.add", 1, 1)
    waiting_low = queues["askbox-low"].enqueue("tests.integration.test_dashboard.add", 4, 4)
    BurstWorker([queues["askbox-default"]], connection=redis_client, serializer=JSONSerializer).work(burst=True)
    finished.refresh()
    assert finished.get_status() == JobStatus.FINISHED
    return {"finished": finished, "high": waiting_high, "low": waiting_low}


class Served(str):
    """The dashboard's host:port, with what it answered to whom."""

    log: list[dict[str, object]]


def _recording(app: Flask, log: list[dict[str, object]]) -> None:
    inner = app.wsgi_app

    def wsgi_app(environ, start_response):  # type: ignore[no-untyped-def]
        def recording_start(status, headers, *args):  # type: ignore[no-untyped-def]
            log.append(
                {
                    "path": environ.get("PATH_INFO"),
                    "status": int(status.split()[0]),
                    "agent": environ.get("HTTP_USER_AGENT", ""),
                    "auth": "HTTP_AUTHORIZATION" in environ,
                }
            )
            return start_response(status, headers, *args)

        return inner(environ, recording_start)

    app.wsgi_app = wsgi_app  # type: ignore[method-assign]


@pytest.fixture()
def dashboard(redis_client: redis.Redis) -> Iterator[Served]:
    app = build_dashboard_app(redis_client, USER, PASSWORD)
    log: list[dict[str, object]] = []
    _recording(app, log)
    server = make_dashboard_server(app, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served = Served(f"127.0.0.1:{server.server_port}")
    served.log = log
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        unavailable("chromium", "not installed (Debian package: apt-get install -y chromium)")
    return path


_profiles = count()


def dump_dom(chromium: str, url: str, tmp_path: Path) -> str:
    """The page after its scripts ran: the lists are filled in by XHR from JSON endpoints."""
    profile = tmp_path / f"chromium-profile-{next(_profiles)}"
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",  # lets the page's XHRs finish before the dump
            "--dump-dom",
            url,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def browser_requests(served: Served) -> list[dict[str, object]]:
    return [r for r in served.log if "HeadlessChrome" in str(r["agent"])]


def visible_text(dom: str) -> str:
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.DOTALL | re.IGNORECASE)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


def get(
    url: str,
    user: str | None = USER,
    password: str | None = PASSWORD,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_browser_sees_queues_and_finished_job_with_auth(chromium, dashboard, jobs, tmp_path):
    job = jobs["finished"]
    base = f"http://{USER}:{PASSWORD}@{dashboard}"

    queues_page = visible_text(dump_dom(chromium, f"{base}/", tmp_path))
    for name in QUEUE_NAMES:
        assert name in queues_page, queues_page[:2000]

    finished_page = visible_text(dump_dom(chromium, f"{base}/0/view/jobs/askbox-default/finished/8/asc/1", tmp_path))
    assert job.id in finished_page, finished_page[:2000]

    job_page = visible_text(dump_dom(chromium, f"{base}/0/view/job/{job.id}", tmp_path))
    for line in PROGRESS:
        assert line in job_page, job_page[:2000]
    assert "finished" in job_page

    # The lists came from the JSON endpoints, fetched by the browser with its credentials.
    fetched = {r["path"] for r in browser_requests(dashboard) if r["status"] == 200}
    assert {
        "/0/data/queues.json",
        "/0/data/jobs/askbox-default/finished/8/asc/1.json",
        f"/0/data/job/{job.id}.json",
    } <= fetched


def test_browser_without_credentials_is_refused(chromium, dashboard, jobs, tmp_path):
    for url in (f"http://{dashboard}/", f"http://{USER}:wrong@{dashboard}/", f"http://{dashboard}/0/data/queues.json"):
        dashboard.log.clear()
        page = visible_text(dump_dom(chromium, url, tmp_path))
        # Headless Chromium abandons a page that asks for credentials it does not have:
        # nothing is shown, and the server log says why.
        assert not any(name in page for name in QUEUE_NAMES), page[:2000]
        seen = browser_requests(dashboard)
        assert seen, "chromium never reached the dashboard"
        assert {r["status"] for r in seen} == {401}, seen


def test_json_endpoints_behind_auth(dashboard, jobs):
    job = jobs["finished"]
    base = f"http://{dashboard}"
    for path in ("/", "/0/data/queues.json", f"/0/data/job/{job.id}.json", "/static/css/main.css", "/nowhere"):
        for user, password in ((None, None), (USER, "wrong"), ("someone", PASSWORD)):
            status, headers, _ = get(base + path, user, password)
            assert status == 401, (path, user)
            assert headers["WWW-Authenticate"].startswith("Basic realm=")

    status, _, body = get(f"{base}/0/data/queues.json")
    assert status == 200
    queues = {q["name"]: q for q in json.loads(body)["queues"]}
    assert set(QUEUE_NAMES) <= queues.keys()
    assert queues["askbox-default"]["finished_job_registry_count"] == 1
    assert queues["askbox-high"]["count"] == queues["askbox-low"]["count"] == 1

    status, _, body = get(f"{base}/0/data/jobs/askbox-default/finished/8/asc/1.json")
    assert status == 200
    assert [j["id"] for j in json.loads(body)["jobs"]] == [job.id]

    # Job data, result and meta are JSON in Redis; the dashboard must read them as such.
    status, _, body = get(f"{base}/0/data/job/{job.id}.json")
    assert status == 200
    info = json.loads(body)
    assert info["status"] == "finished" and info["result"] == 5 and info["origin"] == "askbox-default"
    assert json.loads(info["metadata"])["progress"] == PROGRESS


def test_workers_page_with_a_busy_json_worker(dashboard, jobs, redis_client):
    high = Queue("askbox-high", connection=redis_client, serializer=JSONSerializer)
    worker = Worker([high], connection=redis_client, serializer=JSONSerializer, name="askbox-test-busy")
    worker.register_birth()
    try:
        worker.prepare_execution(jobs["high"])  # what a worker records as it starts a job
        status, _, body = get(f"http://{dashboard}/0/data/workers.json")
    finally:
        worker.register_death()
    assert status == 200, body[-500:]
    (listed,) = [w for w in json.loads(body)["workers"] if w["name"] == worker.name]
    assert listed["state"] == "busy" and listed["current_job"]["job_id"] == jobs["high"].id


def test_cross_origin_post_is_refused(dashboard, jobs):
    job = jobs["finished"]
    status, _, _ = get(
        f"http://{dashboard}/job/{job.id}/delete", method="POST", headers={"Origin": "http://attacker.example"}
    )
    assert status == 403
    assert Job.exists(job.id, connection=job.connection)
    # The dashboard's own buttons post from its own origin: still allowed.
    status, _, body = get(
        f"http://{dashboard}/requeue/askbox-default", method="POST", headers={"Origin": f"http://{dashboard}"}
    )
    assert status == 200 and json.loads(body)["status"] == "OK"


def test_settings_name_the_missing_variables(monkeypatch):
    for name in ("ASKBOX_DASHBOARD_USER", "ASKBOX_DASHBOARD_PASSWORD", "ASKBOX_DASHBOARD_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASKBOX_DASHBOARD_PASSWORD", "do-not-print-me")
    with pytest.raises(ValidationError) as caught:
        DashboardSettings()
    assert "ASKBOX_DASHBOARD_USER" in str(caught.value)
    assert "do-not-print-me" not in str(caught.value) + repr(caught.value.errors())

    monkeypatch.delenv("ASKBOX_DASHBOARD_PASSWORD")
    monkeypatch.setenv("ASKBOX_DASHBOARD_USER", "ops")
    with pytest.raises(ValidationError, match="ASKBOX_DASHBOARD_PASSWORD"):
        DashboardSettings()

    monkeypatch.setenv("ASKBOX_DASHBOARD_PASSWORD", "pw")
    settings = DashboardSettings()
    assert settings.dashboard_port == 9181 and "pw" not in repr(settings)


def fail() -> None:
    raise RuntimeError("a failed question")


@pytest.fixture()
def failed_job(redis_client: redis.Redis) -> Job:
    queue = Queue("askbox-default", connection=redis_client, serializer=JSONSerializer)
    job = queue.enqueue("tests.integration.test_dashboard.fail")
    BurstWorker([queue], connection=redis_client, serializer=JSONSerializer).work(burst=True)
    assert job.get_status(refresh=True) == JobStatus.FAILED
    return job


@contextlib.contextmanager
def attacker_site(page: str) -> Iterator[str]:
    """Another site (``localhost`` is another site than ``127.0.0.1``) serving ``page``."""
    body = page.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def test_cross_site_get_cannot_requeue(chromium, dashboard, failed_job, tmp_path):
    """A page on another site sends the operator's browser to "requeue all" with the
    operator's credentials: a real cross-site GET, credentials included, and nothing moves."""
    target = f"http://{USER}:{PASSWORD}@{dashboard}/requeue/askbox-default"
    page = f'<html><body><img src="{target}"><script>location.href = "{target}";</script></body></html>'
    with attacker_site(page) as site:
        dump_dom(chromium, site, tmp_path)
    sent = [r for r in browser_requests(dashboard) if r["path"] == "/requeue/askbox-default"]
    assert [r["status"] for r in sent if r["auth"]] == [405], sent  # the browser did send the credentials
    assert failed_job.get_status(refresh=True) == JobStatus.FAILED
    status, headers, _ = get(f"http://{dashboard}/requeue/askbox-default")  # same, without a browser
    assert status == 405 and headers["Allow"] == "POST"
    assert failed_job.get_status(refresh=True) == JobStatus.FAILED


def test_delete_and_empty_are_refused_with_the_way_to_cancel(dashboard, jobs):
    own = {"Origin": f"http://{dashboard}"}
    waiting = jobs["high"]
    status, _, body = get(f"http://{dashboard}/job/{waiting.id}/delete", method="POST", headers=own)
    assert status == 403 and b"askbox cancel" in body
    status, _, body = get(f"http://{dashboard}/queue/askbox-high/queued/empty", method="POST", headers=own)
    assert status == 403 and b"askbox cancel" in body
    assert Job.exists(waiting.id, connection=waiting.connection)
    assert waiting.get_status(refresh=True) == JobStatus.QUEUED
