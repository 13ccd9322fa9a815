"""One pipeline: ``askbox ask --inline`` runs the worker's stages, not a path of its own.

Real ``askbox worker``, ``askbox gateway`` and ``askbox ask --inline`` processes, the real
Gemini CLI in real sandboxes, real Redis; the fake Gemini API answers the agent and the
triage side task. What the worker's pipeline does, the inline one now does too (before,
it did none of it): citations linked at the pinned commit with the footer's count, the
answer cache (the worker's answer served to the terminal), the thread's memory
(``--thread``), triage (small talk without a container) and the budget (refused before
any container starts).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from jobs.question import Origin, Question
from jobs.queue import enqueue
from jobs.settings import JobSettings
from jobs.side_tasks import triage
from tests.fakes.gemini_api import FakeGeminiAPI, RecordedRequest, Text
from tests.integration.pipeline_helpers import ASKBOX, Workers, wait_final, worker_env
from tests.integration.test_citations_access import BLOB, commit_all

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.usefixtures("no_leftovers")]

WHERE = "Where is answer() defined?"
FOLLOW_UP = "And what does it return?"
WELCOME = "You're welcome!"
ANSWERS = {WHERE: "`answer()` is in `src/app.py:1-2`.", FOLLOW_UP: "It returns 42 (`src/app.py:2`)."}


def is_triage(request: RecordedRequest) -> bool:
    return triage.SYSTEM.splitlines()[0] in request.system_text()


def model(request: RecordedRequest) -> Text:
    text = request.text()
    if is_triage(request):
        small = "thanks" in text.rsplit("LATEST message:", 1)[-1].lower()
        return Text(json.dumps({"needs_code": not small, "reply": WELCOME if small else ""}))
    # The agent: the question asked last in its prompt (a follow-up's prompt holds the first too).
    asked = max((q for q in ANSWERS if q in text), key=text.rindex, default=None)
    return Text(ANSWERS[asked] if asked else "OK")


def agent_requests(api: FakeGeminiAPI) -> list[RecordedRequest]:
    return [r for r in api.generate_requests if not is_triage(r)]


def test_ask_inline_runs_the_workers_pipeline(redis_server, redis, repo, egress_root, gateway, tmp_path, built_images):
    sha = commit_all(repo)
    with FakeGeminiAPI(default=model) as api:
        proxy = gateway(api.base_url, redis_server.url)
        env = worker_env(
            redis_server,
            repo,
            egress_root,
            ASKBOX_AGENT="gemini",
            ASKBOX_RETRIES="0",
            ASKBOX_SIDE_TASKS="1",
            ASKBOX_GATEWAY_SOCKET_DIR=str(proxy.socket_dir),
        )

        def inline(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [ASKBOX, "ask", "--inline", "--repo", "demo", *args],
                env={**env, **extra},
                capture_output=True,
                text=True,
                timeout=180,
            )

        pool = Workers(env)
        pool.start(1, log_dir=tmp_path)
        try:
            job = enqueue(
                redis, Question(origin=Origin(kind="terminal", user="alice"), text=WHERE, repo="demo"), JobSettings()
            ).job
            queued = wait_final(redis, job.id, 120, pool)
        finally:
            pool.stop()
        # The worker's answer, cited at the pinned commit.
        linked = f"[`src/app.py:1-2`]({BLOB}/{sha}/src/app.py#L1-L2)"
        assert queued["kind"] == "answer" and linked in queued["text"] and queued["verified"] == 2, queued
        ran = len(agent_requests(api))

        # The same question inline: the cache of the terminal's scope has the worker's answer.
        cached = inline(WHERE)
        assert cached.returncode == 0, cached.stderr
        assert cached.stdout.startswith(queued["text"] + "\n\n_Cached answer from commit"), cached.stdout
        assert "cached" in cached.stderr.splitlines()[-1]
        assert len(agent_requests(api)) == ran  # no agent ran for it

        # Fresh, in a thread: the agent answers, cited; the follow-up's prompt holds the first turn.
        first = inline("--fresh", "--thread", "t1", WHERE)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == queued["text"]  # the same answer, linked the same way
        last = first.stderr.splitlines()[-1]
        assert last.startswith("askbox: answered by gemini/gemini-2.5-flash · demo · " + sha[:7]), last
        assert "tokens" in last and last.endswith("· 2 references verified"), last
        second = inline("--thread", "t1", FOLLOW_UP)
        assert second.returncode == 0, second.stderr
        assert f"[`src/app.py:2`]({BLOB}/{sha}/src/app.py#L2)" in second.stdout
        prompt = agent_requests(api)[-1].text()
        assert WHERE in prompt and ANSWERS[WHERE] in prompt and FOLLOW_UP in prompt

        # Small talk: triage answers, no container.
        before = len(agent_requests(api))
        thanks = inline("thanks!")
        assert thanks.returncode == 0, thanks.stderr
        assert WELCOME in thanks.stdout and "without reading the code" in thanks.stdout
        assert len(agent_requests(api)) == before

        # The budget: this user's tokens today are past a one-token budget: refused before any container.
        refused = inline("--fresh", "Which file is the README?", ASKBOX_BUDGET_USER_TOKENS="1")
        assert refused.returncode == 2 and "budget is used up" in refused.stderr, refused.stderr
        assert refused.stdout == "" and len(agent_requests(api)) == before
