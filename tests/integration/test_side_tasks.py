"""Gemini side tasks in the service: triage, compaction, summaries, pacing and outages.

Real bot, worker and gateway processes, real Redis and Docker; the Gemini API is the fake
over real HTTP, called by the real google-genai client (side tasks) and the real Gemini
CLI (agent), both through the gateway. The agent is the cursor stand-in unless a test
needs the fake to see the agent's prompt.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import pytest

from jobs.question import Origin, Question, sanitize_id
from jobs.queue import enqueue
from jobs.settings import JobSettings
from jobs.side_tasks import compaction, summary, triage
from sandbox import labels
from tests.fakes.gemini_api import FakeGeminiAPI, RecordedRequest, Text, max_in_window, new_token
from tests.integration.conftest import ASKER, CHANNEL, bot_env
from tests.integration.gateway_helpers import GatewayProcess, gateway_env
from tests.integration.pipeline_helpers import Workers, wait_final, wait_for, worker_env

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.usefixtures("no_leftovers")]

WELCOME = "You're welcome! Ask me anything about the code."
OUTAGE_LINE = "Gemini side tasks are unavailable"


def _first_line(system: str) -> str:
    return system.strip().splitlines()[0]


def side_task_answers(request: RecordedRequest) -> Text:
    """The fake's answers, by the side task's system instruction; the agent gets the rest.

    Triage: small talk is anything with "thanks" in the latest message. Compaction echoes
    what it was given (so a fact survives every fold). Summaries are one fixed line."""
    system = request.system_text()
    if _first_line(triage.SYSTEM) in system:
        latest = request.text().rsplit("LATEST message:", 1)[-1].lower()
        small = "thanks" in latest
        return Text(json.dumps({"needs_code": not small, "reply": WELCOME if small else ""}))
    if _first_line(compaction.SYSTEM) in system:
        given = request.text().replace("Summary so far:\n(none)", "").replace("Turns to fold in:", "")
        return Text(" ".join(given.replace("Summary so far:", "").split()))
    if _first_line(summary.SYSTEM) in system:
        return Text("The short version: it is a demo repository.")
    return Text("agent answer: " + request.text()[-200:].replace("\n", " "))


@pytest.fixture()
def gemini_api():
    with FakeGeminiAPI(default=side_task_answers) as api:
        yield api


def created_containers(docker_client, job_id: str, since: datetime) -> list[dict]:
    """Sandbox containers Docker created for ``job_id`` since ``since``, from its event log."""
    events = docker_client.events(
        since=since,
        until=datetime.now(UTC),
        decode=True,
        filters={"type": "container", "event": "create", "label": f"{labels.RUN_ID}={job_id}"},
    )
    return list(events)


def slack_workers(fake, redis_server, repo, cursor_standin_image, egress_root, proxy, tmp_path, **extra) -> Workers:
    env = bot_env(fake, redis_server.url, repo)
    env.update(
        ASKBOX_AGENT="cursor",
        ASKBOX_CURSOR_IMAGE=cursor_standin_image,
        CURSOR_API_KEY="key-for-the-standin",
        ASKBOX_EGRESS_SOCKET_DIR=str(egress_root),
        ASKBOX_GATEWAY_SOCKET_DIR=str(proxy.socket_dir),
        ASKBOX_SIDE_TASKS="1",
        **extra,
    )
    return Workers(env)


def job_id_of(fake, event: dict) -> str:
    origin = Origin(kind="slack", user=ASKER, team=fake.team_id, channel=CHANNEL, message_ts=event["ts"])
    return sanitize_id(origin.event_key() or "")


def is_side_task(request: RecordedRequest) -> bool:
    return any(_first_line(part.SYSTEM) in request.system_text() for part in (triage, compaction, summary))


def wait_idle_workers(redis, count: int, timeout: float = 30) -> None:
    from rq import Worker

    wait_for(
        lambda: len([w for w in Worker.all(connection=redis) if w.get_state() == "idle"]) >= count,
        timeout,
        f"{count} idle workers",
    )


def bot_texts(fake, ts: str) -> list[str]:
    return [(m.text or "") + json.dumps(m.blocks or []) for m in fake.thread(CHANNEL, ts) if m.is_bot and not m.deleted]


def test_small_talk_is_answered_without_a_container_and_code_goes_to_the_agent(
    fake,
    bots,
    redis,
    redis_server,
    repo,
    cursor_standin_image,
    egress_root,
    gateway,
    gemini_api,
    docker_client,
    tmp_path,
):
    proxy = gateway(gemini_api.base_url, redis_server.url)
    pool = slack_workers(
        fake, redis_server, repo, cursor_standin_image, egress_root, proxy, tmp_path, ASKBOX_SUMMARY_CHARS="10"
    )
    pool.start(1, log_dir=tmp_path)
    try:
        bots(1)
        wait_idle_workers(redis, 1)
        since = datetime.now(UTC)
        started = time.monotonic()
        mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> thanks!")
        fake.push_event(mention)
        fake.wait_until(lambda: any(WELCOME in t for t in bot_texts(fake, mention["ts"])), timeout=30)
        took = time.monotonic() - started
        job_id = job_id_of(fake, mention)
        print(f"small talk answered in {took:.2f} s")  # its speed: bench/side_tasks.py; here, no sandbox (below)
        answer = next(t for t in bot_texts(fake, mention["ts"]) if WELCOME in t)
        assert "without reading the code" in answer and "`agent`" in answer
        assert created_containers(docker_client, job_id, since) == []
        triaged = [r for r in gemini_api.generate_requests if r.wants_json]
        assert len(triaged) == 1 and triaged[0].model == "gemini-2.5-flash-lite"
        assert "thanks!" in triaged[0].text()

        def containers_for_reply(text: str) -> int:
            """Containers created for one reply in the thread, once it is answered."""
            event = fake.message(ASKER, CHANNEL, text, thread_ts=mention["ts"])
            since = datetime.now(UTC)
            fake.push_event(event)
            fake.wait_until(lambda: "white_check_mark" in fake.get_message(CHANNEL, event["ts"]).reactions, timeout=90)
            return len(created_containers(docker_client, job_id_of(fake, event), since))

        # A code question goes to the agent (the cursor stand-in reads the file).
        assert containers_for_reply("[read:README.md] what is this repo?") == 1
        assert any("demo repo" in t for t in bot_texts(fake, mention["ts"]))  # replies go to the thread
        # A long answer (over ASKBOX_SUMMARY_CHARS) starts with its summary.
        assert any(
            "In short:" in t and "The short version" in t and "demo repo" in t for t in bot_texts(fake, mention["ts"])
        )

        # `agent` at the end forces the agent, even for small talk.
        assert containers_for_reply("thanks! agent") == 1
        assert len([r for r in gemini_api.generate_requests if r.wants_json]) == 2  # not triaged again
    finally:
        pool.stop()


def terminal_question(text: str, session: str, **options) -> Question:
    return Question(origin=Origin(kind="terminal", user="alice", session=session), text=text, repo="demo", **options)


def test_a_fact_from_turn_1_reaches_the_prompt_of_turn_15(
    redis, redis_server, repo, egress_root, gateway, gemini_api, tmp_path
):
    proxy = gateway(gemini_api.base_url, redis_server.url)
    env = worker_env(
        redis_server,
        repo,
        egress_root,
        ASKBOX_GATEWAY_SOCKET_DIR=str(proxy.socket_dir),
        ASKBOX_SIDE_TASKS="1",
        ASKBOX_MEMORY_TURNS="3",
        ASKBOX_AGENT="gemini",
    )
    pool = Workers(env)
    pool.start(1, log_dir=tmp_path)
    fact = new_token()
    settings = JobSettings(repos={"demo": repo})
    try:
        texts = [f"thanks! by the way, the release codename is {fact}"]
        texts += [f"thanks, turn {n}" for n in range(2, 15)]
        for text in texts:  # 14 small-talk turns: triaged, no container
            job = enqueue(redis, terminal_question(text, "long-thread"), settings).job
            final = wait_final(redis, job.id, timeout=30, workers=pool)
            assert final["kind"] == "answer" and WELCOME in final["text"], final
        last = enqueue(redis, terminal_question("agent what was the release codename?", "long-thread"), settings).job
        final = wait_final(redis, last.id, timeout=120, workers=pool)
        assert final["kind"] == "answer", (final, pool.tail())
        agent_prompts = [
            r.text() for r in gemini_api.generate_requests if "release codename?" in r.text() and not is_side_task(r)
        ]
        assert agent_prompts, [r.system_text()[:40] for r in gemini_api.generate_requests]
        assert fact in agent_prompts[0] and "Summary of the conversation so far" in agent_prompts[0]
        assert "turn 14" in agent_prompts[0]  # the recent turns are there as turns
        # Turns 4..15 each pushed one turn out of the 3-turn window, and each was folded in.
        folds = [r for r in gemini_api.generate_requests if _first_line(compaction.SYSTEM) in r.system_text()]
        assert len(folds) == 12
    finally:
        pool.stop()


def test_twenty_questions_from_several_workers_stay_under_the_shared_limit(
    redis, redis_server, repo, cursor_standin_image, egress_root, gateway, gemini_api, tmp_path
):
    limit, window = 4, 2.0
    # The fake's window is a little shorter than the gateway's: its clock runs a few ms behind
    # (admission, then transit), so a quota 429 from it means the gateway over-admitted.
    gemini_api.per_key_limit = (limit, window - 0.1)
    proxy = gateway(gemini_api.base_url, redis_server.url, gemini_request_limit=f"{limit}/2 seconds")
    env = worker_env(
        redis_server,
        repo,
        egress_root,
        ASKBOX_GATEWAY_SOCKET_DIR=str(proxy.socket_dir),
        ASKBOX_SIDE_TASKS="1",
        ASKBOX_SUMMARY_CHARS="10",
        ASKBOX_TRIAGE_TIMEOUT="60",
        ASKBOX_USER_CONCURRENCY="20",
        ASKBOX_AGENT="cursor",
        ASKBOX_CURSOR_IMAGE=cursor_standin_image,
        CURSOR_API_KEY="key-for-the-standin",
    )
    pool = Workers(env)
    pool.start(3, log_dir=tmp_path)
    settings = JobSettings(repos={"demo": repo}, user_max_waiting=100)  # one asker, 20 at once
    texts = [f"thanks {n}!" for n in range(15)] + [f"[read:README.md] what is this, part {n}?" for n in range(5)]
    jobs: list[str] = []

    def ask(batch: list[str]) -> None:
        for text in batch:
            jobs.append(enqueue(redis, terminal_question(text, f"s-{len(jobs)}-{text}"), settings).job.id)

    try:
        senders = [threading.Thread(target=ask, args=(texts[i::4],)) for i in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        finals = [wait_final(redis, job_id, timeout=180, workers=pool) for job_id in jobs]
        assert [f["kind"] for f in finals] == ["answer"] * 20, pool.tail()
        triaged = [f for f in finals if WELCOME in f["text"]]
        summarised = [f for f in finals if f.get("summary")]
        assert len(triaged) == 15 and len(summarised) == 5, finals
        accepted = [t for times in gemini_api.accepted.values() for t in times]
        assert len(accepted) == 25 > limit  # the side tasks alone exceed the limit: pacing had to work
        assert max_in_window(accepted, window - 0.05) <= limit
        assert gemini_api.quota_rejections == 0
    finally:
        pool.stop()


def test_side_tasks_down_or_unconfigured_answers_still_arrive_and_one_line_per_outage(
    redis, redis_server, repo, cursor_standin_image, egress_root, gemini_api, tmp_path
):
    # The gateway is made now but started later: first the workers find no gateway at all.
    proxy = GatewayProcess(
        gateway_env(gemini_api.base_url, ["k1"], redis_server.url, gateway_retries="0", gateway_breaker_threshold="2")
    )
    env = worker_env(
        redis_server,
        repo,
        egress_root,
        ASKBOX_GATEWAY_SOCKET_DIR=str(proxy.socket_dir),
        ASKBOX_SIDE_TASKS="1",
        ASKBOX_AGENT="cursor",
        ASKBOX_CURSOR_IMAGE=cursor_standin_image,
        CURSOR_API_KEY="key-for-the-standin",
    )
    pool = Workers(env)
    pool.start(1, log_dir=tmp_path)
    settings = JobSettings(repos={"demo": repo})

    def ask_twice(phase: str) -> None:
        for n in range(2):
            job = enqueue(redis, terminal_question(f"thanks, {phase} {n}", f"{phase}-{n}"), settings).job
            final = wait_final(redis, job.id, timeout=90, workers=pool)
            assert final["kind"] == "answer" and WELCOME not in final["text"], final  # the agent answered

    def log_count(needle: str) -> int:
        return sum(log.read_text().count(needle) for log in pool.logs)

    try:
        ask_twice("unconfigured")
        assert log_count(OUTAGE_LINE) == 1, pool.tail()
        with proxy:
            job = enqueue(redis, terminal_question("thanks, back", "back"), settings).job
            assert WELCOME in wait_final(redis, job.id, timeout=30, workers=pool)["text"]
            assert log_count("Gemini side tasks work again") == 1
            gemini_api.start_storm()
            ask_twice("storm")
        assert log_count(OUTAGE_LINE) == 2, pool.tail()
    finally:
        gemini_api.stop_storm()
        pool.stop()
        proxy.stop()
