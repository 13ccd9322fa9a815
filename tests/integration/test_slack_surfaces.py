"""Issue 19's Slack surfaces through a real `askbox bot` (Socket Mode) and a real Redis,
against the fake Slack validating every call: the ack before any post, `/askbox`, the
message shortcut and its modal, the repository picker, App Home and the Messages tab's
prompts, feedback, and Slack's stop button. Answering is the worker's (see
test_slack_end_to_end.py)."""

from __future__ import annotations

import json
import subprocess

import pytest
from redis import Redis

from jobs import keys
from jobs import queue as jobs_queue
from jobs.slack import status_owner
from tests.fakes.slack import FakeSlack
from tests.integration.conftest import ASKER, CHANNEL, OTHER, bot_env
from tests.integration.pipeline_helpers import ASKBOX, wait_for
from tests.integration.test_bot import queued, settle, socket_bot

pytestmark = [pytest.mark.redis]

OPEN = "C0OPENCHAN1"  # no default repository; both open to it (the picker's channel)
EMPTY = "C0EMPTYCHN1"  # no repository open to it
ADMIN = "U0ADMIN0001"
ACCESS = json.dumps({"web": {"channels": [CHANNEL, OPEN], "dms": True}, "demo": {"channels": [OPEN]}})


@pytest.fixture()
def bot(fake, redis_server, repo, tmp_path):
    fake.add_user(ADMIN, name="admin")
    with socket_bot(fake, redis_server, repo, tmp_path, ASKBOX_REPO_ACCESS=ACCESS) as proc:
        yield proc


def responses(fake: FakeSlack, url: str) -> list:
    """What the bot POSTed to one response_url."""
    return [body for rid, body in fake.responses if rid == url.rsplit("/", 1)[-1]]


def test_the_ack_comes_before_any_post(fake, bot, redis):
    """Acknowledged from Redis alone: Slack has its ack before the reaction and the status
    message are even requested (the old listener posted both first).

    The fake records a Web API call after its latency, and the ack on another thread:
    with a second of latency, a post made after the ack is recorded well after it however
    a loaded machine schedules the fake's threads, and a post made before the ack (whose
    answer the ack then waited for) is recorded before it."""
    fake.latency = 1.0  # from here on: the bot has started
    mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> how does retry work?")
    envelope = fake.push_event(mention)
    ack = fake.wait_ack(envelope, timeout=5)
    [status] = fake.wait_until(lambda: [m for m in fake.thread(CHANNEL, mention["ts"]) if m.is_bot], timeout=10)
    [question] = queued(redis)
    first_post = min(c.time for c in fake.calls() if c.method in ("chat.postMessage", "reactions.add"))
    assert ack.time < first_post
    assert status.text == "On it: `demo`, position 1."  # (cursor, the default agent here, names no model)
    assert wait_for(lambda: status_owner.read(redis, question.id).ts, 5, "the status record") == status.ts
    assert fake.get_message(CHANNEL, mention["ts"]).reactions == {"eyes": [fake.bot_user_id]}


def test_slash_command_question_repos_usage_and_help(fake, bot, redis):
    ask = fake.slash_command(ASKER, CHANNEL, "how is auth done? repo=web")
    fake.wait_ack(fake.push_slash_command(ask), timeout=5)
    [question] = wait_for(lambda: queued(redis), 10, "the slash command's question")
    root = fake.get_message(CHANNEL, question.origin.thread_ts)
    assert root.is_bot and root.thread_ts is None and root.text == f"<@{ASKER}> asked: how is auth done? repo=web"
    assert question.repo == "web" and question.text == "how is auth done?" and question.origin.user == ASKER
    fake.wait_until(lambda: [m for m in fake.thread(CHANNEL, root.ts) if m.ts != root.ts], timeout=10)  # its status

    asks = {word: fake.slash_command(ASKER, CHANNEL, word) for word in ("repos", "usage", "help", "")}
    for payload in asks.values():
        fake.push_slash_command(payload)
    shown = {
        word: fake.wait_until(lambda p=p: responses(fake, p["response_url"]), timeout=10)[0]["text"]
        for word, p in asks.items()
    }
    assert shown["repos"] == "You may ask about: `demo` (this channel's default), `web`."
    assert shown["usage"].startswith("Today (UTC): 1 question, 0 tokens")
    assert "/askbox QUESTION [repo=NAME]" in shown["help"] and shown[""] == shown["help"]
    assert len(queued(redis)) == 1


def test_slash_command_bad_input_is_one_ephemeral_line(fake, bot, redis):
    """An unknown repository (or one this place may not see), a conversation the bot
    cannot post in: one line only the caller sees, no message left behind, no job."""
    cases = [
        fake.slash_command(ASKER, CHANNEL, "what? repo=nope"),
        fake.slash_command(ASKER, EMPTY, "what?"),
        fake.slash_command(ASKER, "D0NOTOURS01", "what? repo=web"),
    ]
    fake.fail("chat.postMessage", "channel_not_found", when=lambda args: args.get("channel") == "D0NOTOURS01")
    for payload in cases:
        fake.push_slash_command(payload)
    said = [fake.wait_until(lambda p=p: responses(fake, p["response_url"]), timeout=10)[0]["text"] for p in cases]
    assert (
        said[0]
        == "I can't answer about the repository `nope` here. Repositories you may ask about here: `demo`, `web`."
    )
    assert said[1] == "No repository is open here."
    assert said[2].startswith("I can't post in this conversation.")
    settle(fake)
    assert queued(redis) == [] and not [c for c in fake.calls("chat.postMessage") if c.ok]


def test_message_shortcut_modal_and_its_submission(fake, bot, redis):
    trace = fake.add_message(OPEN, "Traceback: KeyError 'user'\n  at auth.py:12", user=OTHER)
    shortcut = fake.message_shortcut(ASKER, OPEN, trace.ts, "askbox_ask_about_message")
    fake.wait_ack(fake.push_interactive(shortcut), timeout=5)
    [view] = fake.wait_until(fake.opened_views, timeout=10)
    [select] = [b["element"] for b in view["blocks"] if b.get("block_id") == "repo"]
    assert [o["value"] for o in select["options"]] == ["demo", "web"]  # what this channel may see, only

    values = {
        "question": {"question_text": {"type": "plain_text_input", "value": "Where does this come from?"}},
        "repo": {"repo_select": {"type": "static_select", "selected_option": select["options"][1]}},
    }
    submission = fake.view_submission(ASKER, view, values)
    first = fake.push_interactive(submission)
    again = fake.push_interactive(submission)  # the modal submitted twice
    assert fake.wait_ack(first, timeout=5).payload is None  # closed
    fake.wait_ack(again, timeout=5)
    [question] = wait_for(lambda: queued(redis), 10, "the modal's question")
    assert question.repo == "web" and question.origin.thread_ts == trace.ts and question.origin.channel == OPEN
    assert question.text.startswith("Where does this come from?")
    assert f"from <@{OTHER}>:\n> Traceback: KeyError 'user'\n>   at auth.py:12" in question.text
    [twice] = fake.wait_until(lambda: fake.ephemerals(OPEN), timeout=10)
    assert twice.ephemeral_to == ASKER and "You already asked this" in twice.text
    settle(fake)
    assert len(queued(redis)) == 1

    # Forged: a repository the modal did not offer (this channel may not see it) is refused in the modal.
    forged = fake.view_submission(
        ASKER,
        {**view, "id": "V0FORGED001"},
        {**values, "repo": {"repo_select": {"selected_option": {"value": "secret"}}}},
    )
    refused = fake.wait_ack(fake.push_interactive(forged), timeout=5)
    assert refused.payload == {"response_action": "errors", "errors": {"repo": "Pick one of the repositories offered."}}


def test_shortcut_in_a_channel_with_no_repository(fake, bot, redis):
    message = fake.add_message(EMPTY, "some error", user=OTHER)
    shortcut = fake.message_shortcut(ASKER, EMPTY, message.ts, "askbox_ask_about_message")
    fake.push_interactive(shortcut)
    [said] = fake.wait_until(lambda: responses(fake, shortcut["response_url"]), timeout=10)
    assert said["text"] == "No repository is open in this channel, so I can't answer questions about its messages here."
    settle(fake)
    assert fake.opened_views() == [] and queued(redis) == []


def test_repository_picker_instead_of_a_refusal(fake, bot, redis):
    mention = fake.app_mention(ASKER, OPEN, f"<@{fake.bot_user_id}> how are sessions stored?")
    fake.push_event(mention)
    [picker] = fake.wait_until(lambda: fake.ephemerals(OPEN), timeout=10)
    assert picker.ephemeral_to == ASKER and queued(redis) == []
    [element] = [e for b in picker.blocks if b["type"] == "actions" for e in b["elements"]]
    assert [o["text"]["text"] for o in element["options"]] == ["demo", "web"]
    choice = next(o["value"] for o in element["options"] if o["text"]["text"] == "demo")

    fake.push_interactive(fake.select_action(OTHER, picker, "askbox_pick_repo", choice))  # not theirs
    fake.wait_until(lambda: len(fake.ephemerals(OPEN)) == 2, timeout=10)
    assert (
        fake.ephemerals(OPEN)[1].ephemeral_to == OTHER and "Only the person who asked" in fake.ephemerals(OPEN)[1].text
    )
    forged = choice.split("|")[0] + "|secret"
    fake.push_interactive(fake.select_action(ASKER, picker, "askbox_pick_repo", forged))
    fake.wait_until(lambda: len(fake.ephemerals(OPEN)) == 3, timeout=10)
    assert "`secret`" in fake.ephemerals(OPEN)[2].text and queued(redis) == []

    picked = fake.select_action(ASKER, picker, "askbox_pick_repo", choice)
    fake.push_interactive(picked)
    fake.push_interactive(fake.select_action(ASKER, picker, "askbox_pick_repo", choice))  # a double click
    [question] = wait_for(lambda: queued(redis), 10, "the picked question")
    assert question.repo == "demo" and question.text == "how are sessions stored?"
    assert question.origin.thread_ts == mention["ts"]
    fake.wait_until(
        lambda: any(isinstance(r, dict) and r.get("delete_original") for r in responses(fake, picked["response_url"])),
        timeout=10,
    )
    settle(fake)
    assert len(queued(redis)) == 1


def test_messages_tab_prompts_only_for_what_the_user_may_see(fake, bot, redis):
    fake.push_event(fake.app_home_opened(ASKER, "messages", channel="D0ASKERDM01"))
    prompts = fake.wait_until(lambda: fake.suggested_prompts.get(("D0ASKERDM01", None)), timeout=10)["prompts"]
    # DMs may ask about `web` (its rule says dms) and never about `demo` (the channel's own).
    assert prompts and all("web" in p["title"] and "demo" not in p["title"] + p["message"] for p in prompts)
    assert all(p["message"].startswith("repo=web ") for p in prompts) and len(prompts) <= 4


def test_app_home_for_a_user_and_an_admin(fake, bot, redis):
    mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> what is the retry policy?")
    fake.push_event(mention)
    wait_for(lambda: queued(redis), 10, "a question")
    fake.push_event(fake.app_home_opened(ASKER, "home"))
    view = fake.wait_until(lambda: fake.home_views.get(ASKER), timeout=10)
    text = json.dumps(view)
    assert f"`demo`: <#{CHANNEL}>" in text and f"`web`: <#{CHANNEL}>, <#{OPEN}>, my Messages tab" in text
    assert f"https://fake.slack.com/archives/{CHANNEL}/p{mention['ts'].replace('.', '')}" in text
    assert "what is the retry policy?" in text and "1 questions" in text
    assert "Today, per channel" not in text  # for admins only
    fake.push_event(fake.app_home_opened(ADMIN, "home"))
    admin = json.dumps(fake.wait_until(lambda: fake.home_views.get(ADMIN), timeout=10))
    assert "Today, per channel" in admin and f"<#{CHANNEL}>: 1 questions" in admin


def test_feedback_recorded_once_per_user_however_often_clicked(fake, bot, redis, redis_server, repo):
    from jobs.metrics import AnswerFeedbackCollector
    from jobs.slack.blocks import feedback_actions

    job_id = "slack-T0FAKETEAM1-C0FAKECHAN1-1700000000_000001"
    redis.hset(
        keys.feedback_answer(job_id),
        mapping={
            "question": "why?",
            "answer": "because",
            "repo": "web",
            "model": "gemini-2.5-flash",
            "agent": "gemini",
            "commit": "abc",
        },
    )
    answer = fake.add_message(CHANNEL, "because", user=fake.bot_user_id, bot_id=fake.bot_id)
    answer.blocks = [feedback_actions(job_id)]
    clicks = [(ASKER, True)] * 5 + [(OTHER, True), (OTHER, False), (OTHER, False)]
    for user, up in clicks:  # one after the other: Socket Mode runs listeners concurrently
        fake.wait_ack(fake.push_interactive(fake.feedback_click(user, CHANNEL, answer.ts, up)), timeout=5)
    assert redis.hgetall(keys.feedback_votes(job_id)) == {ASKER.encode(): b"up", OTHER.encode(): b"down"}
    [family] = list(AnswerFeedbackCollector(redis).collect())
    counts = {
        (s.labels["verdict"], s.labels["repo"], s.labels["model"]): s.value
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert counts == {("up", "web", "gemini-2.5-flash"): 1.0, ("down", "web", "gemini-2.5-flash"): 1.0}
    env = {**bot_env(fake, redis_server.url, repo)}
    done = subprocess.run(
        [ASKBOX, "feedback", "export", "--since", "1h"], env=env, capture_output=True, text=True, timeout=60
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["user"], r["verdict"], r["question"], r["answer"], r["repo"], r["commit"]) for r in lines] == [
        (ASKER, "up", "why?", "because", "web", "abc"),
        (OTHER, "down", "why?", "because", "web", "abc"),
    ]
    assert "2 verdicts since 1h ago" in done.stderr


def test_stop_button_cancels_a_queued_question_and_refuses_others(fake, bot, redis: Redis):
    mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> a long question")
    fake.push_event(mention)
    [question] = wait_for(lambda: queued(redis), 10, "the question")
    fake.push_event(fake.agent_session_stopped(OTHER, CHANNEL, mention["ts"]))  # not theirs
    [refusal] = fake.wait_until(lambda: fake.ephemerals(CHANNEL), timeout=10)
    assert refusal.ephemeral_to == OTHER and "Only the person who asked" in refusal.text and queued(redis)

    fake.push_event(fake.agent_session_stopped(ASKER, CHANNEL, mention["ts"]))
    final = wait_for(
        lambda: jobs_queue.fetch(redis, question.id).get_meta(refresh=True).get("final"),
        10,
        "the question to be cancelled",
    )
    assert final["kind"] == "cancelled" and f"<@{ASKER}>" in final["text"]  # the thread says who
    fake.wait_until(lambda: fake.session_status(CHANNEL, mention["ts"]) == "closed", timeout=10)

    fake.push_event(fake.agent_session_stopped(ASKER, CHANNEL, mention["ts"]))  # already finished
    fake.wait_until(lambda: len(fake.ephemerals(CHANNEL)) == 2, timeout=10)
    late = fake.ephemerals(CHANNEL)[1]
    assert late.ephemeral_to == ASKER and "already finished" in late.text
    assert sum("Cancelled by" in (m.text or "") for m in fake.thread(CHANNEL, mention["ts"])) == 1


def test_http_mode_over_signed_requests_with_two_processes(fake, redis_server, redis, repo, tmp_path):
    """HTTP mode, two processes on one port: a mention, a slash command (form fields) and a
    feedback click (``payload=``), each signed as Slack signs them; SIGTERM stops both."""
    import os
    import signal

    from tests.integration.pipeline_helpers import free_port

    secret = "surfaces-signing-secret"
    port = free_port()
    env = {
        **bot_env(fake, redis_server.url, repo),
        "SLACK_SIGNING_SECRET": secret,
        "ASKBOX_HTTP_HOST": "127.0.0.1",
        "ASKBOX_REPO_ACCESS": ACCESS,
    }
    env.pop("SLACK_APP_TOKEN")
    proc = subprocess.Popen(
        [ASKBOX, "bot", "--http", "--port", str(port), "--processes", "2"],
        env=env,
        stdout=(tmp_path / "http-bot.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/slack/events"
    try:
        mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> over http")
        wait_for(lambda: _posted(fake, url, fake.event_callback(mention), secret), 30, "the HTTP bot")
        command = fake.slash_command(ASKER, CHANNEL, "repos")
        assert fake.deliver_form(url, command, secret)[0] == 200
        assert fake.wait_until(lambda: responses(fake, command["response_url"]), timeout=10)[0]["text"].startswith(
            "You may ask about"
        )
        wait_for(lambda: len(queued(redis)) == 1, 10, "the mention's question")
        answer = fake.add_message(CHANNEL, "an answer", user=fake.bot_user_id, bot_id=fake.bot_id)
        from jobs.slack.blocks import feedback_actions

        answer.blocks = [feedback_actions(queued(redis)[0].id)]
        click = fake.feedback_click(OTHER, CHANNEL, answer.ts, False)
        assert fake.deliver_form(url, {"payload": json.dumps(click)}, secret)[0] == 200
        assert redis.hget(keys.feedback_votes(queued(redis)[0].id), OTHER) == b"down"
        forged = fake.deliver_form(url, {"payload": json.dumps(click)}, "not-the-secret")
        assert forged[0] == 401
        trace = fake.add_message(CHANNEL, "boom", user=OTHER)  # the shortcut and its modal, over HTTP
        opened = fake.message_shortcut(ASKER, CHANNEL, trace.ts, "askbox_ask_about_message")
        assert fake.deliver_form(url, {"payload": json.dumps(opened)}, secret)[0] == 200
        [view] = fake.wait_until(fake.opened_views, timeout=10)
        empty = fake.view_submission(
            ASKER, view, {"question": {"question_text": {"type": "plain_text_input", "value": " "}}}
        )
        status, body = fake.deliver_form(url, {"payload": json.dumps(empty)}, secret)
        assert (status, json.loads(body)) == (
            200,
            {"response_action": "errors", "errors": {"question": "Write a question."}},
        )
        children = [
            int(p)
            for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        ]
        assert len(children) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert all(not os.path.exists(f"/proc/{pid}") for pid in children)


def _posted(fake: FakeSlack, url: str, payload: dict, secret: str) -> bool:
    try:
        return fake.deliver_http(url, payload, secret)[0] == 200
    except OSError:
        return False


def test_an_answer_before_the_bots_reply_leaves_no_stale_status(fake, redis_server, redis, repo, monkeypatch):
    """The bot posts after its ack; a worker can answer first (a cached answer, an idle
    worker, a backed-up reply pool). The final settles the status message's owner, so the
    late reply posts no "On it" (and no eyes) under the answer."""
    from bot.ingress import Ingress
    from bot.settings import BotSettings
    from jobs.final import Final
    from jobs.settings import Settings
    from jobs.slack.thread_publisher import slack_publisher_for
    from jobs.slack.web_api import slack_client

    for name, value in bot_env(fake, redis_server.url, repo).items():
        monkeypatch.setenv(name, value)
    settings = Settings.load()
    ingress = Ingress(redis, slack_client(fake.bot_token, fake.api_url), settings, BotSettings())
    mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> hi")
    fake.record_event(mention)
    reply = ingress.on_event(fake.event_callback(mention))
    assert reply.kind == "queued"
    job = jobs_queue.fetch(redis, reply.job_id)
    from jobs.question import Question

    publisher = slack_publisher_for(Question.model_validate(job.args[0]), job, settings.slack)
    assert publisher is not None and publisher.final(Final(kind="answer", text="Hello!"))
    ingress.reply(reply)  # the bot's reply, late
    texts = [m.text for m in fake.thread(CHANNEL, mention["ts"]) if m.is_bot]
    assert texts == ["Hello!"], texts
    assert fake.get_message(CHANNEL, mention["ts"]).reactions == {"white_check_mark": [fake.bot_user_id]}
