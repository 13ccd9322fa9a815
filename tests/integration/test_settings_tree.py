"""Settings that must reach the process that uses them: the worker's, not the enqueuer's.

Both tests failed before the settings tree: the RQ timeout was computed by whoever
enqueued (the bot, which compose never gave ``ASKBOX_SANDBOX_TIMEOUT``), and
``ASKBOX_SANDBOX_RUNTIME`` reached ``askbox sandbox run`` only, never a question.
"""

from __future__ import annotations

import pytest

from jobs import queue as jobs_queue
from jobs.question import Origin, Question
from jobs.settings import JobSettings
from tests.fakes.gemini_api import FakeGeminiAPI, Text
from tests.integration.pipeline_helpers import Workers, wait_final, worker_env

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.usefixtures("no_leftovers")]


def ask(redis, text: str) -> str:
    question = Question(origin=Origin(kind="terminal", user="alice"), text=text, repo="demo")
    return jobs_queue.enqueue(redis, question, JobSettings()).job.id


def test_the_workers_deadline_governs_not_the_enqueuers(
    redis_server, redis, repo, egress_root, tmp_path, built_images, gateway, monkeypatch
):
    # The enqueuing process (a bot) has a short deadline of its own: 1 s + the 10 s margin.
    monkeypatch.setenv("ASKBOX_SANDBOX_TIMEOUT", "1")
    monkeypatch.setenv("ASKBOX_JOB_TIMEOUT_MARGIN", "10")
    with FakeGeminiAPI() as api:
        # About 16 s of streaming: well past what the enqueuer's numbers would allow.
        api.script(Text("a slow but complete answer", chunks=5, delay=4.0))
        proxy = gateway(api.base_url, redis_server.url)
        pool = Workers(
            worker_env(
                redis_server,
                repo,
                egress_root,
                ASKBOX_AGENT="gemini",
                ASKBOX_GATEWAY_SOCKET_DIR=str(proxy.socket_dir),
                ASKBOX_SANDBOX_TIMEOUT="90",
                ASKBOX_JOB_TIMEOUT_MARGIN="10",
            )
        )
        pool.start(1, log_dir=tmp_path)
        try:
            job_id = ask(redis, "Why is this slow?")
            final = wait_final(redis, job_id, timeout=120, workers=pool)
        finally:
            pool.stop()
    assert final["kind"] == "answer", final
    assert final["text"] == "a slow but complete answer"
    assert final["duration"] > 11


def test_the_configured_runtime_reaches_questions(
    redis_server, redis, repo, egress_root, tmp_path, cursor_standin_image
):
    pool = Workers(
        worker_env(
            redis_server,
            repo,
            egress_root,
            ASKBOX_AGENT="cursor",
            ASKBOX_CURSOR_IMAGE=cursor_standin_image,
            CURSOR_API_KEY="k",
            ASKBOX_SANDBOX_RUNTIME="runsc",
            ASKBOX_RETRIES="0",
        )
    )
    pool.start(1, log_dir=tmp_path)
    try:
        final = wait_final(redis, ask(redis, "Where is main?"), timeout=60, workers=pool)
    finally:
        pool.stop()
    assert final["kind"] == "infra", final
    assert "container runtime 'runsc' is not installed" in final["text"]
    assert "ASKBOX_SANDBOX_RUNTIME" in final["text"]
