"""The Slack bot as deployed: real `askbox bot` processes (Bolt, Socket Mode) against a fake
Slack, with a real Redis. Answering is the worker's job (see test_slack_end_to_end.py)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from redis import Redis

from jobs import queue as jobs_queue
from jobs.question import Question
from tests.fakes.slack import FakeSlack
from tests.integration.conftest import ASKER, CHANNEL, OTHER, bot_env
from tests.integration.pipeline_helpers import ASKBOX, wait_for

pytestmark = [pytest.mark.redis]


def queued(redis: Redis) -> list[Question]:
    ids = [j for q in jobs_queue.queues(redis) for j in q.job_ids]
    return [Question.model_validate(jobs_queue.fetch(redis, j).args[0]) for j in ids]


def status_ts(redis: Redis, job_id: str) -> str | None:
    """The question's status message, posted after the ack (jobs/slack/status_owner.py)."""
    from jobs.slack import status_owner

    return status_owner.read(redis, job_id).ts


def settle(fake: FakeSlack, seconds: float = 1.0) -> None:
    """Let in-flight listener work finish before counting what did not happen."""
    time.sleep(seconds)


def test_mention_is_acknowledged_and_queued(fake, bots, redis):
    bots(1)
    mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> agent=gemini how does retry work?")
    fake.wait_ack(fake.push_event(mention), timeout=5)
    status = fake.wait_until(lambda: [m for m in fake.thread(CHANNEL, mention["ts"]) if m.is_bot], timeout=10)
    [question] = wait_for(lambda: queued(redis), 5, "the job")
    assert question.text == "how does retry work?" and question.agent == "gemini"
    assert question.repo == "demo"  # the channel's default repository
    assert question.origin.user == ASKER and question.origin.thread_ts == mention["ts"]
    assert wait_for(lambda: status_ts(redis, question.id), 5, "the status record") == status[0].ts
    assert question.id == f"slack-{fake.team_id}-{CHANNEL}-{mention['ts'].replace('.', '_')}"
    assert status[0].text == "On it: `demo` with gemini-2.5-flash, position 1."
    button = status[0].blocks[1]["elements"][0]
    assert (button["action_id"], button["value"]) == ("askbox_cancel", question.id)
    message = fake.get_message(CHANNEL, mention["ts"])
    assert "eyes" in message.reactions


def test_a_status_message_reset_after_slack_posted_it_is_found_not_posted_again(fake, bots, redis):
    """Slack posts the status message and the connection is reset before its answer:
    the bot does not post it again (slack_sdk's connection-error retry would), it finds
    it in the thread by its metadata and the job carries its ts."""
    bots(1)
    fake.connection_reset("chat.postMessage")
    mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> asked over a bad link")
    fake.wait_ack(fake.push_event(mention), timeout=10)
    [question] = wait_for(lambda: queued(redis), 10, "the job")
    settle(fake)
    statuses = [m for m in fake.thread(CHANNEL, mention["ts"]) if m.is_bot]
    assert len(statuses) == 1 and statuses[0].text.startswith("On it: "), [m.text for m in statuses]
    assert wait_for(lambda: status_ts(redis, question.id), 5, "the status record") == statuses[0].ts
    assert [c.status for c in fake.calls("chat.postMessage")] == [0]  # one post, its answer lost


def test_retries_double_delivery_and_two_bot_processes_make_one_job(fake, bots, redis):
    bots(2)
    mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> why?")
    first = fake.push_event(mention, to=0)
    fake.redeliver(first, retry_reason="timeout", to=0)  # Slack's retry
    fake.redeliver(first, retry_reason="timeout", to=1)  # ... landing on the other process
    same_message = fake.message(ASKER, CHANNEL, mention["text"], ts=mention["ts"])
    fake.push_event(same_message, to=1)  # the same message as message.channels
    wait_for(lambda: queued(redis), 5, "the job")
    settle(fake, 1.5)
    assert len(queued(redis)) == 1
    bot_posts = [m for m in fake.thread(CHANNEL, mention["ts"]) if m.is_bot]
    assert len(bot_posts) == 1 and len(fake.calls("reactions.add")) == 1


def test_follow_ups_dms_and_what_is_ignored(fake, bots, redis):
    bots(1)
    mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> first question")
    fake.push_event(mention)
    wait_for(lambda: len(queued(redis)) == 1, 5, "the first job")
    fake.push_event(fake.message(ASKER, CHANNEL, "and a follow-up", thread_ts=mention["ts"]))
    fake.push_event(fake.dm(OTHER, "a direct question"))
    wait_for(lambda: len(queued(redis)) == 3, 5, "the follow-up and the DM")
    fake.push_event(fake.message(OTHER, CHANNEL, "chatter in another thread", thread_ts="1700000000.000001"))
    fake.push_event(fake.message(OTHER, CHANNEL, "top-level chatter"))
    fake.push_event(fake.bot_message(CHANNEL, "another bot", thread_ts=mention["ts"], bot_id="B0OTHERBOT1"))
    fake.push_event(fake.message_changed(ASKER, CHANNEL, mention["ts"], "edited", "first question"))
    fake.push_event(fake.channel_join(OTHER, CHANNEL))
    settle(fake)
    texts = sorted(q.text for q in queued(redis))
    assert texts == ["a direct question", "and a follow-up", "first question"]
    follow_up = next(q for q in queued(redis) if q.text == "and a follow-up")
    assert follow_up.thread_key == next(q for q in queued(redis) if q.text == "first question").thread_key


def test_help_and_unknown_repo_answer_without_a_job(fake, bots, redis):
    bots(1)
    help_mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> help")
    bad_repo = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> repo=nope what?")
    fake.push_event(help_mention)
    fake.push_event(bad_repo)
    usage = fake.wait_until(lambda: [m for m in fake.thread(CHANNEL, help_mention["ts"]) if m.is_bot], timeout=10)
    # Only the asker sees it: an unknown name reads exactly like one this channel may not see.
    refusal = fake.wait_until(lambda: fake.ephemerals(CHANNEL), timeout=10)
    assert "repo=NAME" in usage[0].text
    assert "`nope`" in refusal[0].text and "`demo`" in refusal[0].text and "`web`" in refusal[0].text
    settle(fake)
    assert queued(redis) == []


def test_cancel_button_only_for_the_asker_or_an_admin(fake, bots, redis):
    bots(1)
    mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> slow question")
    fake.push_event(mention)
    [question] = wait_for(lambda: queued(redis), 5, "the job")
    status = wait_for(lambda: status_ts(redis, question.id), 5, "the status message")
    fake.push_interactive(fake.block_actions(OTHER, CHANNEL, status, "askbox_cancel", value=question.id))
    refusal = fake.wait_until(lambda: fake.ephemerals(CHANNEL), timeout=5)
    assert refusal[0].ephemeral_to == OTHER and "Only the person who asked" in refusal[0].text
    assert len(queued(redis)) == 1  # still queued
    fake.push_interactive(fake.block_actions(ASKER, CHANNEL, status, "askbox_cancel", value=question.id))
    # Cancelled after the ack (the click's listener defers its Slack work): wait for the final.
    final = wait_for(
        lambda: jobs_queue.fetch(redis, question.id).get_meta(refresh=True).get("final"), 5, "the job to be cancelled"
    )
    assert not queued(redis)
    assert final["kind"] == "cancelled" and f"<@{ASKER}>" in final["text"]


@contextlib.contextmanager
def socket_bot(fake, redis_server, repo, tmp_path, **settings: str) -> Iterator[subprocess.Popen]:
    """One Socket Mode `askbox bot` process with extra settings."""
    log = (tmp_path / "bot-settings.log").open("w")
    proc = subprocess.Popen(
        [ASKBOX, "bot"], env={**bot_env(fake, redis_server.url, repo), **settings}, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        fake.wait_connections(1, timeout=30)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        # Until the fake sees the socket closed, an event pushed next (the next bot's) could
        # still go to it.
        fake.wait_until(lambda: not fake.connection_ids, timeout=10)


@pytest.mark.parametrize("follow_ups", ["asker", "anyone"])
def test_replies_by_others_in_a_thread_follow_the_setting(fake, redis_server, redis, repo, tmp_path, follow_ups):
    with socket_bot(fake, redis_server, repo, tmp_path, ASKBOX_FOLLOW_UPS=follow_ups):
        mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> first question")
        fake.push_event(mention)
        wait_for(lambda: len(queued(redis)) == 1, 5, "the first job")
        fake.push_event(fake.message(OTHER, CHANNEL, "someone else chiming in", thread_ts=mention["ts"]))
        fake.push_event(fake.message(ASKER, CHANNEL, "the asker's follow-up", thread_ts=mention["ts"]))
        wait_for(lambda: "the asker's follow-up" in {q.text for q in queued(redis)}, 5, "the asker's follow-up")
        settle(fake)
        texts = {q.text for q in queued(redis)}
        assert ("someone else chiming in" in texts) == (follow_ups == "anyone")
        # Addressing the bot by name is always a question, whoever asks.
        fake.push_event(
            fake.app_mention(OTHER, CHANNEL, f"<@{fake.bot_user_id}> my own question", thread_ts=mention["ts"])
        )
        wait_for(lambda: "my own question" in {q.text for q in queued(redis)}, 5, "the mention in the thread")


def test_one_user_cannot_fill_the_queue(fake, redis_server, redis, repo, tmp_path):
    with socket_bot(fake, redis_server, repo, tmp_path, ASKBOX_USER_MAX_WAITING="2"):
        asked = [fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> question {i}") for i in range(4)]
        for mention in asked:
            fake.wait_ack(fake.push_event(mention), timeout=5)
        other = fake.app_mention(OTHER, CHANNEL, f"<@{fake.bot_user_id}> someone else's question")
        fake.wait_ack(fake.push_event(other), timeout=5)
        wait_for(lambda: len(queued(redis)) == 3, 5, "three jobs")
        settle(fake)
        assert sorted(q.text for q in queued(redis)) == ["question 0", "question 1", "someone else's question"]
        for mention in asked[2:]:
            [status] = [m for m in fake.thread(CHANNEL, mention["ts"]) if m.is_bot]
            assert "You already have 2 questions waiting" in status.text
            assert "no_entry" in fake.get_message(CHANNEL, mention["ts"]).reactions


def test_missing_settings_name_the_variable(redis_server, repo, fake):
    env = bot_env(fake, redis_server.url, repo)
    del env["SLACK_BOT_TOKEN"]
    done = subprocess.run([ASKBOX, "bot"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "SLACK_BOT_TOKEN" in done.stderr
    env = bot_env(fake, redis_server.url, repo)
    env["ASKBOX_CHANNEL_REPOS"] = "not json"
    done = subprocess.run([ASKBOX, "bot"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "ASKBOX_CHANNEL_REPOS" in done.stderr


@pytest.mark.parametrize("secret", ["", None])
def test_http_mode_without_a_signing_secret_does_not_start(redis_server, repo, fake, tmp_path, secret):
    """`SLACK_SIGNING_SECRET=` (set, empty) or unset: `askbox bot --http` stops at start
    with one line naming the variable. Were it to listen, Bolt would verify requests
    against a secret anyone can know: the attempt below forges a mention with the
    fallback the bot used to give Bolt, and with the empty secret Bolt itself falls to."""
    from tests.integration.pipeline_helpers import free_port

    port = free_port()
    env = {**bot_env(fake, redis_server.url, repo), "SLACK_SIGNING_SECRET": secret}
    if secret is None:
        del env["SLACK_SIGNING_SECRET"]
    del env["SLACK_APP_TOKEN"]
    proc = subprocess.Popen(
        [ASKBOX, "bot", "--http", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        url = f"http://127.0.0.1:{port}/slack/events"
        forged = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> forged")
        answers = [fake.deliver_http(url, fake.event_callback(forged), key)[0] for key in ("unused-in-socket-mode", "")]
        proc.kill()
        proc.wait()
        pytest.fail(f"`askbox bot --http` listened without a signing secret; forged events got {answers}")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, stderr
    assert len(lines) == 1 and "SLACK_SIGNING_SECRET" in lines[0], stderr
    assert "Traceback" not in stderr and stdout == ""


@contextlib.contextmanager
def http_bot(
    fake, redis_server, repo, tmp_path, **settings: str
) -> Iterator[tuple[int, Callable[..., tuple[int, str]]]]:
    """A real `askbox bot --http` process; yields its port and ``deliver(event, **kwargs)``
    once it answers (its probe question, "probe", is queued)."""
    from tests.integration.pipeline_helpers import free_port

    port = free_port()
    env = {**bot_env(fake, redis_server.url, repo), "SLACK_SIGNING_SECRET": "s3cret", **settings}
    del env["SLACK_APP_TOKEN"]
    log = (tmp_path / "http-bot.log").open("w")
    proc = subprocess.Popen(
        [ASKBOX, "bot", "--http", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/slack/events"

    def deliver(mention, **kwargs):
        return fake.deliver_http(url, fake.event_callback(mention), "s3cret", **kwargs)

    try:
        wait_for(lambda: _answers(deliver, fake), 30, "the HTTP bot to listen")
        yield port, deliver
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_http_mode_accepts_signed_events_only(fake, redis_server, redis, repo, tmp_path):
    with http_bot(fake, redis_server, repo, tmp_path) as (port, deliver):
        url = f"http://127.0.0.1:{port}/slack/events"
        stale = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> stale")
        assert deliver(stale, timestamp=int(time.time()) - 600)[0] == 401
        unsigned = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> unsigned")
        assert deliver(unsigned, signed=False)[0] == 401
        wrong = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> wrong secret")
        assert fake.deliver_http(url, fake.event_callback(wrong), "not-the-secret")[0] == 401
        good = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> signed question")
        assert deliver(good)[0] == 200
        assert deliver(good, retry_num=1, retry_reason="http_timeout")[0] == 200  # a retry: acked, no new job
        wait_for(lambda: [q for q in queued(redis) if q.text == "signed question"], 10, "the signed question")
        settle(fake)
        assert sorted(q.text for q in queued(redis)) == ["probe", "signed question"]


def _trickle(sockets: list[socket.socket], stop: threading.Event) -> None:
    """A slow-loris client: one byte per connection every 0.2 s, never a whole request."""
    while not stop.wait(0.2):
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.send(b"x")


def _closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed ``sock`` (anything it says first, e.g. a 408, is read)."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    return time.monotonic() - started


def test_http_mode_slow_clients_do_not_block_signed_events(fake, redis_server, redis, repo, tmp_path):
    """An unauthenticated client trickling its headers, and one trickling its body, on
    three connections each: a signed event is still answered inside Slack's 3 s, both
    kinds are cut off at the request deadline, and an oversized body is refused unread."""
    with http_bot(fake, redis_server, repo, tmp_path, ASKBOX_HTTP_REQUEST_TIMEOUT="4") as (port, deliver):
        headers = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        bodies = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        for sock in headers:
            sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nX-Slow: ")
        for sock in bodies:
            sock.sendall(
                b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n{"
            )
        stop = threading.Event()
        trickler = threading.Thread(target=_trickle, args=(headers + bodies, stop), daemon=True)
        trickler.start()
        try:
            time.sleep(0.5)  # the slow clients are in the middle of their requests
            good = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> asked during a slow-loris")
            started = time.monotonic()
            assert deliver(good)[0] == 200
            assert time.monotonic() - started < 3.0  # Slack gives up (and retries) after 3 s
            wait_for(lambda: [q for q in queued(redis) if q.text == "asked during a slow-loris"], 5, "the question")
            # Still trickling, yet cut off at the 4 s deadline (a per-read timeout would never fire).
            for sock in headers + bodies:
                assert _closed_within(sock, 8.0) < 8.0
        finally:
            stop.set()
            trickler.join(timeout=5)
            for sock in headers + bodies:
                sock.close()
        big = socket.create_connection(("127.0.0.1", port))
        with big:
            big.sendall(
                b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Type: application/json\r\n"
                b"Content-Length: 5000000\r\n\r\n"
            )
            big.settimeout(5)
            assert big.recv(4096).startswith(b"HTTP/1.1 413 ")  # refused before a byte of the body was sent
        assert sorted(q.text for q in queued(redis)) == ["asked during a slow-loris", "probe"]


def _answers(deliver, fake) -> bool:
    try:
        return (
            deliver(fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> probe", ts="1600000000.000001"))[0] == 200
        )
    except OSError:
        return False


def test_feedback_buttons_count_one_vote_per_person(fake, bots, redis):
    from jobs.metrics import FeedbackCollector

    bots(1)
    answer = fake.add_message(CHANNEL, "an answer", user=fake.bot_user_id, bot_id=fake.bot_id)
    for user, action in [(ASKER, "up"), (ASKER, "up"), (OTHER, "up"), (ASKER, "down")]:
        envelope = fake.push_interactive(
            fake.block_actions(user, CHANNEL, answer.ts, f"askbox_feedback_{action}", value="slack-T-C-1_2")
        )
        fake.wait_ack(envelope, timeout=5)
    wait_for(lambda: redis.hget("askbox:feedback:slack-T-C-1_2", ASKER) == b"down", 5, "the changed vote")
    settle(fake, 0.5)
    [family] = list(FeedbackCollector(redis).collect())
    assert {s.labels["vote"]: s.value for s in family.samples if s.name.endswith("_total")} == {"up": 1.0, "down": 1.0}


def test_redis_down_means_no_ack_and_slacks_redelivery_is_answered(fake, bots, redis, redis_server):
    bots(1)
    redis_server.crash()
    mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> asked while Redis restarts")
    first = fake.push_event(mention)
    with pytest.raises(TimeoutError):
        fake.wait_ack(first, timeout=3)  # not acknowledged: Slack will deliver it again
    redis_server.start()
    again = fake.redeliver(first, retry_reason="timeout")
    fake.wait_ack(again, timeout=10)
    [question] = wait_for(lambda: queued(redis), 10, "the redelivered question")
    assert question.text == "asked while Redis restarts"
    # The status message comes after the ack now: wait for it, then make sure it is the only one.
    fake.wait_until(lambda: [m for m in fake.thread(CHANNEL, mention["ts"]) if m.is_bot and not m.deleted], timeout=10)
    settle(fake)
    assert len([m for m in fake.thread(CHANNEL, mention["ts"]) if m.is_bot and not m.deleted]) == 1


def test_a_repo_the_channel_may_not_see_is_refused_to_the_asker_only(fake, redis_server, redis, repo, tmp_path):
    """`repo=secret` where the policy does not allow it: an ephemeral refusal to the asker,
    no status message, no reaction, no job; the allowed channel and user get a job."""
    access = {"secret": {"channels": ["C0VAULT0001"], "users": [ASKER]}}
    settings = {
        "ASKBOX_REPOS": json.dumps({"demo": str(repo), "secret": str(repo)}),
        "ASKBOX_REPO_ACCESS": json.dumps(access),
    }
    with socket_bot(fake, redis_server, repo, tmp_path, **settings):
        refused = [
            fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> repo=secret what is the key?"),
            fake.dm(ASKER, "repo=secret what is the key?"),
            fake.app_mention(OTHER, "C0VAULT0001", f"<@{fake.bot_user_id}> repo=secret what is the key?"),
        ]
        for event in refused:
            fake.wait_ack(fake.push_event(event), timeout=5)
        shown = fake.wait_until(lambda: len(fake.ephemerals()) == 3 and fake.ephemerals(), timeout=10)
        assert [(m.channel, m.ephemeral_to) for m in shown] == [
            (CHANNEL, ASKER),
            ("D0FAKEDM001", ASKER),
            ("C0VAULT0001", OTHER),
        ]
        assert all("I can't answer about the repository `secret` here" in m.text for m in shown)
        assert "`demo`" in shown[0].text and "`secret`" not in shown[0].text.split("here:")[-1]
        allowed = fake.app_mention(ASKER, "C0VAULT0001", f"<@{fake.bot_user_id}> repo=secret what is the key?")
        fake.push_event(allowed)
        [question] = wait_for(lambda: queued(redis), 5, "the allowed question")
        assert question.repo == "secret" and question.origin.channel == "C0VAULT0001"
        settle(fake)
        assert len(queued(redis)) == 1 and len(fake.ephemerals()) == 3
        for event in refused:
            assert [m for m in fake.thread(event["channel"], event["ts"]) if m.is_bot] == []  # no status message
            assert fake.get_message(event["channel"], event["ts"]).reactions == {}


def test_slack_connect_askers_reach_only_what_is_open_to_shared_channels(fake, redis_server, redis, repo, tmp_path):
    """An asker from another workspace (the event's team is not ours): the channel's own
    repo yes, a repo open to every channel ("*") only with "shared": true."""
    with socket_bot(fake, redis_server, repo, tmp_path, ASKBOX_REPO_ACCESS=json.dumps({"web": {"channels": ["*"]}})):

        def external(text: str) -> dict:
            event = fake.app_mention(OTHER, CHANNEL, f"<@{fake.bot_user_id}> {text}")
            event["team"] = "T0OTHERORG1"
            return event

        fake.push_event(fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> repo=web ours"))
        fake.push_event(external("repo=web theirs"))
        fake.push_event(external("the channel's own repo"))
        wait_for(lambda: len(queued(redis)) == 2, 5, "two jobs")
        [refusal] = fake.wait_until(lambda: fake.ephemerals(CHANNEL), timeout=5)
        settle(fake)
        assert refusal.ephemeral_to == OTHER and "`web`" in refusal.text
        asked = {q.text: q for q in queued(redis)}
        assert set(asked) == {"ours", "the channel's own repo"}
        assert not asked["ours"].origin.shared and asked["ours"].repo == "web"
        assert asked["the channel's own repo"].origin.shared and asked["the channel's own repo"].repo == "demo"


def test_a_dm_about_a_channels_repo_is_refused_unless_a_rule_opens_it(fake, redis_server, redis, repo, tmp_path):
    """`demo` is the channel's (ASKBOX_CHANNEL_REPOS) and no rule names it: a DM asking
    about it gets an ephemeral refusal and no job, as if it did not exist; `web`, whose
    rule says `dms: true`, is answered. Then a rule opening `demo` to DMs: queued."""
    with socket_bot(fake, redis_server, repo, tmp_path):
        refused = fake.dm(ASKER, "repo=demo what does the channel's repo hide?")
        fake.wait_ack(fake.push_event(refused), timeout=5)
        [shown] = fake.wait_until(lambda: fake.ephemerals("D0FAKEDM001"), timeout=10)
        assert shown.ephemeral_to == ASKER and "I can't answer about the repository `demo` here" in shown.text
        assert "`web`" in shown.text and "`demo`" not in shown.text.split("here:")[-1]
        allowed = fake.dm(ASKER, "repo=web and this one?")
        fake.push_event(allowed)
        [question] = wait_for(lambda: queued(redis), 5, "the DM about web")
        settle(fake)
        assert question.repo == "web" and len(queued(redis)) == 1
        assert [m for m in fake.thread("D0FAKEDM001", refused["ts"]) if m.is_bot] == []
    opened = json.dumps({"web": {"channels": [CHANNEL], "dms": True}, "demo": {"dms": True}})
    with socket_bot(fake, redis_server, repo, tmp_path, ASKBOX_REPO_ACCESS=opened):
        again = fake.dm(ASKER, "repo=demo now that a rule opens it?")
        fake.push_event(again)
        wait_for(lambda: "now that a rule opens it?" in {q.text for q in queued(redis)}, 5, "the opened DM")
        assert [q.repo for q in queued(redis) if q.text == "now that a rule opens it?"] == ["demo"]
