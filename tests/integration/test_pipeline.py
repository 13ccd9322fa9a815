"""The job pipeline with real Redis, real `askbox worker` processes and real sandboxes.

The agent is the cursor-agent stand-in replaying real transcripts (see tests/standins/).
"""

from __future__ import annotations

import collections
import os
import subprocess
import threading
import time

import pytest
from redis import Redis
from rq import Worker

from jobs import queue as jobs_queue
from jobs.cancel import cancel
from jobs.question import Origin, Question
from jobs.settings import JobSettings
from jobs.slack.settings import SlackSettings
from sandbox import labels
from tests.conftest import sandbox_containers
from tests.integration.pipeline_helpers import ASKBOX, DockerSocketRelay, Workers, final_of, wait_final, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.usefixtures("no_leftovers")]
SLOW = "[transcript:direct-sleep]"  # about 4.7 s of real, recorded cursor-agent output
QUICK = "[transcript:subagent-sleep-v2]"  # about 1.6 s


@pytest.fixture()
def settings(redis_server) -> JobSettings:
    return JobSettings()


@pytest.fixture()
def workers(redis_server, cursor_standin_image, egress_root, repo, tmp_path):
    env = {
        **os.environ,
        "ASKBOX_REDIS_URL": redis_server.url,
        "ASKBOX_AGENT": "cursor",
        "ASKBOX_CURSOR_IMAGE": cursor_standin_image,
        "CURSOR_API_KEY": "key-for-the-standin",
        "ASKBOX_EGRESS_SOCKET_DIR": str(egress_root),
        "ASKBOX_REPOS": f'{{"demo": "{repo}"}}',
        "ASKBOX_MAINTENANCE_INTERVAL": "5",
        "ASKBOX_JOB_MONITORING_INTERVAL": "1",
        "ASKBOX_REAPER_INTERVAL": "2",
        "ASKBOX_WORKER_TTL": "20",
        "PYTHONUNBUFFERED": "1",
    }
    pool = Workers(env)
    pool.log_dir = tmp_path  # type: ignore[attr-defined]
    yield pool
    pool.stop()


def ask(redis: Redis, settings: JobSettings, text: str, user: str = "alice", **kwargs) -> str:
    question = Question(origin=Origin(kind="terminal", user=user), text=text, repo="demo", **kwargs)
    return jobs_queue.enqueue(redis, question, settings).job.id


def finals_posted(redis: Redis) -> int:
    return len(redis.keys("askbox:final:*"))


def test_20_questions_5_users_3_workers(redis, settings, workers, docker_client, tmp_path):
    # user0 asks 8 at once, first: with 3 workers free, only the per-user limit holds them back.
    askers = ["user0"] * 8 + [f"user{1 + i % 4}" for i in range(12)]
    ids = [ask(redis, settings, f"{QUICK} q{i}", user=user) for i, user in enumerate(askers)]
    peak: collections.Counter[str] = collections.Counter()
    done = threading.Event()

    def observe() -> None:  # what really runs, from Docker's own view
        while not done.is_set():
            running = collections.Counter(
                c.attrs["Labels"].get(labels.PREFIX + "user") for c in sandbox_containers(docker_client)
            )
            for user, n in running.items():
                peak[user] = max(peak[user], n)
            time.sleep(0.05)

    observer = threading.Thread(target=observe, daemon=True)
    observer.start()
    started = time.monotonic()
    workers.start(3, log_dir=tmp_path)
    finals = [wait_final(redis, job_id, 180, workers) for job_id in ids]
    elapsed = time.monotonic() - started
    done.set()
    observer.join()
    assert [f["kind"] for f in finals] == ["answer"] * 20, workers.tail()
    assert finals_posted(redis) == 20  # exactly one final each
    assert max(peak.values()) <= 2, peak  # never more than 2 running for one user ...
    assert peak["user0"] == 2, peak  # ... and the limit was what held user0 back
    assert len(peak) == 5
    print(f"20 questions, 5 users, 3 workers: {elapsed:.1f} s; peak per user {dict(peak)}")


def test_priorities_are_served_in_order(redis, settings, workers, tmp_path):
    low = [ask(redis, settings, f"{QUICK} low {i}", user=f"l{i}", priority="low") for i in range(3)]
    high = [ask(redis, settings, f"{QUICK} high {i}", user=f"h{i}", priority="high") for i in range(3)]
    default = [ask(redis, settings, f"{QUICK} default {i}", user=f"d{i}") for i in range(3)]
    [worker] = workers.start(1, burst=True, log_dir=tmp_path)
    assert worker.wait(timeout=120) == 0, workers.tail()
    started = {j: jobs_queue.fetch(redis, j).started_at for j in low + high + default}
    order = sorted(started, key=started.get)
    assert order == high + default + low


def test_cancel_running_question(redis, settings, workers, docker_client, tmp_path):
    job_id = ask(redis, settings, SLOW)
    workers.start(1, log_dir=tmp_path)
    wait_for(lambda: sandbox_containers(docker_client), 60, "the sandbox to start")
    asked = time.monotonic()
    assert cancel(redis, job_id, by="bob", slack=SlackSettings()) == "stopping"
    wait_for(lambda: not sandbox_containers(docker_client), 5, "the container to go")
    gone = time.monotonic() - asked
    final = wait_final(redis, job_id, 30, workers)
    assert final["kind"] == "cancelled" and final["text"] == "Cancelled by bob."
    print(f"cancel: container gone {gone:.2f} s after the request")


def test_cancel_queued_question_never_runs(redis, settings, workers, tmp_path):
    job_id = ask(redis, settings, QUICK)
    assert cancel(redis, job_id, by="carol", slack=SlackSettings()) == "cancelled"
    assert final_of(redis, job_id)["text"] == "Cancelled by carol before it started."
    [worker] = workers.start(1, burst=True, log_dir=tmp_path)
    assert worker.wait(timeout=60) == 0
    assert finals_posted(redis) == 1
    assert cancel(redis, job_id, by="carol", slack=SlackSettings()) == "finished"


def test_timeout_says_how_long_and_what_was_done(redis, settings, workers, tmp_path):
    workers.env["ASKBOX_SANDBOX_TIMEOUT"] = "3"
    job_id = ask(redis, settings, SLOW)
    workers.start(1, log_dir=tmp_path)
    final = wait_final(redis, job_id, 60, workers)
    assert final["kind"] == "timeout"
    assert final["text"].startswith("Timed out after 3 s.")


def test_worker_killed_mid_job(redis, settings, workers, docker_client, tmp_path):
    from rq import Worker

    job_id = ask(redis, settings, SLOW)
    pool = workers.start(2, log_dir=tmp_path)
    running = wait_for(lambda: sandbox_containers(docker_client), 60, "the sandbox to start")
    worker_name = wait_for(lambda: jobs_queue.fetch(redis, job_id).worker_name, 10, "the job's worker")
    pid = {w.name: w.pid for w in Worker.all(connection=redis)}[worker_name]
    runner = next(p for p in pool if p.pid == pid)
    killed = workers.kill(runner)  # SIGKILL to the worker and its work-horse
    assert len(killed) >= 2, "the work-horse was not found"
    killed_at = time.monotonic()
    wait_for(
        lambda: running[0].id not in {c.id for c in sandbox_containers(docker_client)},
        30,
        "the surviving worker's reaper to remove the orphaned container",
    )
    reaped_after = time.monotonic() - killed_at
    final = wait_final(redis, job_id, 180, workers)
    print(
        f"worker SIGKILLed: orphan reaped after {reaped_after:.1f} s, final '{final['kind']}' "
        f"after {time.monotonic() - killed_at:.1f} s"
    )
    assert final["kind"] == "answer"  # retried on the survivor: nothing final had been shown
    assert finals_posted(redis) == 1


def test_redis_restart_with_queued_jobs(redis, redis_server, settings, workers, tmp_path):
    ids = [ask(redis, settings, f"{QUICK} {i}", user=f"u{i}") for i in range(5)]
    redis_server.crash()  # SIGKILL: only the append-only file survives
    redis_server.start()
    [worker] = workers.start(1, burst=True, log_dir=tmp_path)
    assert worker.wait(timeout=120) == 0, workers.tail()
    assert [final_of(redis, j)["kind"] for j in ids] == ["answer"] * 5
    assert finals_posted(redis) == 5


def test_redis_restart_under_a_running_worker(redis, redis_server, settings, workers, tmp_path):
    workers.start(1, log_dir=tmp_path)
    first = ask(redis, settings, QUICK)
    assert wait_final(redis, first, 60, workers)["kind"] == "answer"
    redis_server.crash()
    time.sleep(1)
    redis_server.start()
    second = ask(redis, settings, f"{QUICK} after the restart")
    assert wait_final(redis, second, 90, workers)["kind"] == "answer"  # the worker reconnected


def test_duplicate_question_makes_one_job(redis, settings):
    origin = Origin(kind="slack", user="U1", team="T1", channel="C1", message_ts="1700000000.000100")
    first = jobs_queue.enqueue(redis, Question(origin=origin, text="why?"), settings)
    again = jobs_queue.enqueue(redis, Question(origin=origin, text="why?"), settings)
    assert first.job.id == again.job.id == "slack-T1-C1-1700000000_000100"
    assert again.duplicate and not first.duplicate
    assert jobs_queue.waiting(redis) == 1


def test_queue_full_is_refused_clearly(redis, redis_server):
    small = JobSettings(max_waiting=3)
    for i in range(3):
        ask(redis, small, f"q{i}", user=f"u{i}")
    with pytest.raises(jobs_queue.QueueFull, match="3 questions are already waiting"):
        ask(redis, small, "one too many", user="u9")


def test_unknown_repo_is_rejected_listing_known_ones(redis, settings, workers, tmp_path):
    question = Question(origin=Origin(kind="terminal", user="alice"), text="hi", repo="nope")
    job_id = jobs_queue.enqueue(redis, question, settings).job.id
    workers.start(1, log_dir=tmp_path)
    final = wait_final(redis, job_id, 60, workers)
    assert final["kind"] == "rejected" and "demo" in final["text"] and "nope" in final["text"]


def test_cache_answers_again_fast_and_fresh_bypasses(redis, settings, workers, repo, tmp_path):
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], check=True
    )
    workers.start(1, log_dir=tmp_path)
    first = wait_final(redis, ask(redis, settings, "[read:README.md] What is this?"), 60, workers)
    second = wait_final(
        redis, ask(redis, settings, "  what is THIS?  ".replace("what", "[read:README.md] what")), 60, workers
    )
    fresh = wait_final(redis, ask(redis, settings, "[read:README.md] What is this?", fresh=True), 60, workers)
    assert first["kind"] == second["kind"] == fresh["kind"] == "answer"
    assert not first["cached"] and second["cached"] and not fresh["cached"]
    assert "Cached answer from commit" in second["text"]
    print(f"cache: first answer {first['duration']:.2f} s, cached {second['duration']:.3f} s")  # speed: bench/


def test_askbox_ask_follows_the_queue(redis_server, workers, repo, tmp_path):
    env = {**workers.env}
    no_worker = subprocess.run(
        [ASKBOX, "ask", "--repo", "demo", "hi"], env=env, capture_output=True, text=True, timeout=30
    )
    assert no_worker.returncode == 3 and "no worker is running" in no_worker.stderr
    workers.start(1, log_dir=tmp_path)
    wait_for(lambda: _worker_count(redis_server.url), 30, "the worker to register")
    done = subprocess.run(
        [ASKBOX, "ask", "--repo", "demo", "[read:src/app.py] what does answer() return?"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + workers.tail()
    assert "def answer():" in done.stdout
    assert "Read src/app.py" in done.stderr and "queued as terminal-" in done.stderr


def _worker_count(url: str) -> int:
    from rq import Worker

    return len(Worker.all(connection=Redis.from_url(url)))


def test_follow_up_in_the_thread_sees_earlier_turns(redis, redis_server, settings, workers, gateway, tmp_path):
    """With the real Gemini CLI: what the second request to the API carries is what the agent saw."""
    from tests.fakes.gemini_api import FakeGeminiAPI, Text

    with FakeGeminiAPI() as api:
        proxy = gateway(api.base_url, redis_server.url)
        workers.env.update(
            ASKBOX_AGENT="gemini",
            ASKBOX_GATEWAY_SOCKET_DIR=str(proxy.socket_dir),
            ASKBOX_CHANNEL_REPOS='{"C1": "demo"}',
        )  # the channel may ask about it
        api.script(Text("The answer is ALPHA-42.", chunks=2), Text("Yes, still ALPHA-42."))
        workers.start(1, log_dir=tmp_path)
        origin = Origin(kind="slack", user="U1", team="T1", channel="C1", thread_ts="100.1", message_ts="100.1")
        first = jobs_queue.enqueue(redis, Question(origin=origin, text="What is the answer?", repo="demo"), settings)
        assert wait_final(redis, first.job.id, 90, workers)["text"] == "The answer is ALPHA-42."
        reply = origin.model_copy(update={"message_ts": "100.2"})
        second = jobs_queue.enqueue(redis, Question(origin=reply, text="Are you sure?", repo="demo"), settings)
        assert wait_final(redis, second.job.id, 90, workers)["text"] == "Yes, still ALPHA-42."
        prompts = [r.text() for r in api.requests if r.is_generate]
    assert "What is the answer?" in prompts[1] and "ALPHA-42" in prompts[1] and "Are you sure?" in prompts[1]
    assert "ALPHA-42" not in prompts[0]


def test_worker_metrics_and_json_logs(redis, settings, workers, tmp_path):
    import json

    from tests.integration.pipeline_helpers import free_port

    port = free_port()
    workers.env["ASKBOX_METRICS_PORT"] = str(port)
    workers.start(1, log_dir=tmp_path)
    job_id = ask(redis, settings, "[read:README.md] hi", user="metrics-user")
    assert wait_final(redis, job_id, 60, workers)["kind"] == "answer"
    text = wait_for(lambda: _scrape(f"http://127.0.0.1:{port}/metrics"), 10, "the metrics endpoint")
    assert 'askbox_questions_total{outcome="answer"} 1.0' in text
    assert "askbox_agent_seconds_count 1.0" in text
    assert 'askbox_queue_depth{queue="askbox-default"} 0.0' in text
    assert "askbox_running_sandboxes 0.0" in text
    lines = [json.loads(line) for line in workers.logs[0].read_text().splitlines() if line.startswith("{")]
    assert any(entry.get("job_id") == job_id and entry.get("user") == "metrics-user" for entry in lines), lines[-5:]


def _scrape(url: str) -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def test_positions_on_enqueue(redis, settings):
    positions = [
        jobs_queue.enqueue(
            redis, Question(origin=Origin(kind="terminal", user=f"p{i}"), text="q", repo="demo", priority=p), settings
        ).position
        for i, p in enumerate(["default", "default", "high", "low"])
    ]
    assert positions == [0, 1, 0, 3]  # a high question goes ahead of the waiting default ones


def test_infrastructure_fault_is_retried_then_reported_once(redis, settings, workers, tmp_path):
    """Docker unreachable before anything was shown: RQ retries, then one clear final message."""
    # The daemon is there when the worker starts (it stops at once otherwise: start checks)
    # and gone by the time the question runs.
    relay = DockerSocketRelay(tmp_path / "docker.sock")
    workers.env["DOCKER_HOST"] = relay.url
    workers.env["ASKBOX_RETRIES"] = "1"  # the worker decides a question's retries
    workers.start(1, log_dir=tmp_path)
    wait_for(lambda: Worker.count(connection=redis), 60, "the worker to pass its start checks")
    relay.close()
    job_id = ask(redis, settings, QUICK)
    final = wait_final(redis, job_id, 90, workers)
    assert final["kind"] == "infra"
    assert "Docker daemon not reachable" in final["text"] and job_id in final["text"]
    job = jobs_queue.fetch(redis, job_id)
    assert job.retries_left == 0  # it was retried once before giving up
    assert finals_posted(redis) == 1
