"""A mention answered end to end: fake Slack -> `askbox bot` -> Redis -> `askbox worker` ->
sandbox -> real agent (the Gemini CLI against a fake Gemini API, or the cursor stand-in)
-> progress and answer back in the fake Slack thread."""

from __future__ import annotations

import json
import random
import secrets
import time
from pathlib import Path

import pytest

from tests.fakes.gemini_api import FakeGeminiAPI, FunctionCall, RecordedRequest, Text
from tests.fakes.slack import FakeSlack
from tests.integration.conftest import ASKER, CHANNEL, OTHER, bot_env
from tests.integration.pipeline_helpers import Workers, wait_for

FIXTURE_METHODS = Path(__file__).resolve().parents[1] / "fixtures" / "slack-api" / "methods"
pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.usefixtures("no_leftovers")]


@pytest.fixture()
def gemini_api():
    with FakeGeminiAPI() as api:
        yield api


@pytest.fixture()
def workers(fake, redis_server, repo, cursor_standin_image, gemini_api, egress_root, gateway, tmp_path):
    env = {**bot_env(fake, redis_server.url, repo)}
    proxy = gateway(gemini_api.base_url, redis_server.url)
    env.update(
        ASKBOX_AGENT="gemini",
        ASKBOX_GATEWAY_SOCKET_DIR=str(proxy.socket_dir),
        ASKBOX_CURSOR_IMAGE=cursor_standin_image,
        CURSOR_API_KEY="key-for-the-standin",
        ASKBOX_EGRESS_SOCKET_DIR=str(egress_root),
    )
    pool = Workers(env)
    pool.start(1, log_dir=tmp_path)
    yield pool
    pool.stop()


def bot_replies(fake: FakeSlack, ts: str) -> list:
    return [m for m in fake.thread(CHANNEL, ts) if m.is_bot and not m.deleted]


def final_reaction(fake: FakeSlack, ts: str, name: str, timeout: float = 90) -> None:
    fake.wait_until(lambda: name in fake.get_message(CHANNEL, ts).reactions, timeout=timeout)


def test_mention_answered_by_the_gemini_cli_and_follow_up_keeps_context(fake, bots, workers, gemini_api, repo):
    token = secrets.token_hex(8)
    (repo / "secret.txt").write_text(f"token {token}\n")

    def answer_with_file(request: RecordedRequest) -> Text:
        outputs = [json.dumps(r.get("response", {})) for r in request.function_responses()]
        return Text("The file says: " + " ".join(outputs), chunks=3)

    gemini_api.script(
        FunctionCall("read_file", {"file_path": "secret.txt"}), answer_with_file, Text("Still the same token.")
    )
    bots(1)
    mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> what is in secret.txt?")
    fake.push_event(mention)
    final_reaction(fake, mention["ts"], "white_check_mark")
    replies = bot_replies(fake, mention["ts"])
    answer = next(m for m in replies if token in (m.text or "") + json.dumps(m.blocks or []))
    assert "demo" in json.dumps(answer.blocks) and "gemini" in json.dumps(answer.blocks)  # footer
    assert '"feedback_buttons"' in json.dumps(answer.blocks)  # Slack's feedback buttons element
    status = replies[0]
    assert "askbox_cancel" not in json.dumps(status.blocks or [])  # turned into the final state
    assert status.edits >= 1 and "eyes" not in fake.get_message(CHANNEL, mention["ts"]).reactions

    follow_up = fake.message(ASKER, CHANNEL, "are you sure?", thread_ts=mention["ts"])
    fake.push_event(follow_up)
    final_reaction(fake, follow_up["ts"], "white_check_mark")
    prompts = [r.text() for r in gemini_api.requests if r.is_generate]
    assert "what is in secret.txt?" in prompts[-1] and token in prompts[-1] and "are you sure?" in prompts[-1]


def test_mention_answered_by_cursor_and_cancelled_by_the_asker(fake, bots, workers, redis):
    bots(1)
    first = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> agent=cursor [read:README.md] what is this?")
    fake.push_event(first)
    final_reaction(fake, first["ts"], "white_check_mark")
    assert any("demo repo" in (m.text or "") + json.dumps(m.blocks or []) for m in bot_replies(fake, first["ts"]))

    slow = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> agent=cursor [transcript:direct-sleep]")
    fake.push_event(slow)
    [question] = wait_for(lambda: [q for q in _all_questions(redis) if q.origin.message_ts == slow["ts"]], 10, "job")
    wait_for(lambda: _state(redis, question.id) == "running", 60, "the question to run")
    from jobs.slack import status_owner

    status = wait_for(lambda: status_owner.read(redis, question.id).ts, 10, "the status message")
    fake.push_interactive(fake.block_actions(ASKER, CHANNEL, status, "askbox_cancel", value=question.id))
    final_reaction(fake, slow["ts"], "no_entry_sign", timeout=30)
    texts = [m.text or "" for m in bot_replies(fake, slow["ts"])]
    assert sum("Cancelled by" in t for t in texts) == 1, texts


def test_an_answer_of_60000_characters(fake, bots, workers, gemini_api):
    # Varied text: the Gemini CLI's loop detection stops a stream that repeats itself.
    rng = random.Random(7)
    words = ["cache", "retry", "worker", "queue", "thread", "token", "sandbox", "proxy", "answer", "commit"]
    long_answer = "\n\n".join(
        f"Paragraph {i}: "
        + " ".join(rng.choice(words) + str(rng.randrange(1000)) for _ in range(50))
        + f"\n\n```python\nprint({i}, {rng.random()!r})\n```"
        for i in range(200)
    )[:60_000]
    gemini_api.script(Text(long_answer, chunks=20))
    bots(1)
    mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> explain everything")
    fake.push_event(mention)
    final_reaction(fake, mention["ts"], "white_check_mark", timeout=120)
    replies = bot_replies(fake, mention["ts"])
    files = [f for m in replies for f in m.files]
    assert len(files) == 1, (
        [(m.text or "")[:80] for m in replies],
        [c.response for c in fake.calls("files.completeUploadExternal")],
        [c.response for c in fake.calls("files.getUploadURLExternal")],
        workers.tail(15),
    )
    assert files[0].name == "answer.md"
    assert files[0].content.decode() == long_answer
    assert all(len(m.text or "") <= 40_000 for m in replies)


def _all_questions(redis):
    from rq.exceptions import NoSuchJobError

    from jobs.question import Question
    from jobs.queue import fetch

    found = []
    for key in redis.keys("askbox:question:*"):
        try:  # a pending claim's job may not exist yet (it is made right after the claim)
            found.append(Question.model_validate(fetch(redis, key.decode().split(":")[-1]).args[0]))
        except NoSuchJobError:
            continue
    return found


def _state(redis, job_id: str) -> str | None:
    from jobs.queue import fetch

    return fetch(redis, job_id).get_meta(refresh=True).get("state")


# ------------------------------------------------------------------ issue 19: the Slack-native surfaces


def covered_by_the_manifest(fake: FakeSlack) -> None:
    """Every Slack method the bot and the worker called needs only scopes the manifest asks for."""
    from bot.manifest import SCOPES

    needed = {
        scope
        for method in {c.method for c in fake.calls()} - {"auth.test", "apps.connections.open"}
        for scope in (json.loads((FIXTURE_METHODS / f"{method}.json").read_text()).get("scope") or {}).get("bot", ())
    }
    assert needed <= set(SCOPES), sorted(needed - set(SCOPES))


def answer_in(fake: FakeSlack, channel: str, thread_ts: str) -> str:
    return "\n".join(
        (m.text or "") + json.dumps(m.blocks or [])
        for m in fake.thread(channel, thread_ts)
        if m.is_bot and not m.deleted
    )


def test_slash_command_answered_in_its_thread(fake, bots, workers, redis):
    bots(1)
    fake.push_slash_command(fake.slash_command(ASKER, CHANNEL, "agent=cursor [read:README.md] what is this?"))
    [root] = fake.wait_until(
        lambda: [m for m in fake.channel_messages(CHANNEL) if m.is_bot and not m.thread_ts], timeout=10
    )
    fake.wait_until(lambda: "white_check_mark" in fake.get_message(CHANNEL, root.ts).reactions, timeout=90)
    assert root.text.startswith(f"<@{ASKER}> asked: ")
    assert "demo repo" in answer_in(fake, CHANNEL, root.ts)
    history = fake.session_history(CHANNEL, root.ts)
    assert history[0] == ("processing", "[read:README.md] what is this?") and history[-1][0] == "active", history
    covered_by_the_manifest(fake)


def test_shortcut_modal_answered_under_the_original_message(fake, bots, workers, gemini_api, redis):
    gemini_api.script(Text("It comes from the auth middleware."))
    bots(1)
    trace = fake.add_message(CHANNEL, "KeyError: 'session_user' in middleware.py line 40", user=OTHER)
    fake.push_interactive(fake.message_shortcut(ASKER, CHANNEL, trace.ts, "askbox_ask_about_message"))
    [view] = fake.wait_until(fake.opened_views, timeout=10)
    values = {
        "question": {"question_text": {"type": "plain_text_input", "value": "agent where is this raised?"}},
        "repo": {
            "repo_select": {
                "type": "static_select",
                "selected_option": {"text": {"type": "plain_text", "text": "web"}, "value": "web"},
            }
        },
    }
    fake.push_interactive(fake.view_submission(ASKER, view, values))
    fake.wait_until(lambda: "white_check_mark" in fake.get_message(CHANNEL, trace.ts).reactions, timeout=90)
    assert "auth middleware" in answer_in(fake, CHANNEL, trace.ts)  # in the message's own thread
    prompt = next(r.text() for r in gemini_api.requests if r.is_generate and "where is this raised?" in r.text())
    assert "KeyError: 'session_user' in middleware.py line 40" in prompt  # the message, quoted
    assert fake.session_status(CHANNEL, trace.ts) == "active"
    [status] = [m for m in bot_replies(fake, trace.ts) if (m.metadata or {}).get("event_type") == "askbox_status"]
    # What is being done, once the worker pinned it (the repo fixture is no git checkout: no commit).
    assert any(
        t.startswith(":hourglass_flowing_sand: On it: `web` with gemini-2.5-flash · ") for t in status.history
    ), status.history
    covered_by_the_manifest(fake)


def test_slacks_stop_button_ends_a_running_question(fake, bots, workers, redis, docker_client):
    from tests.conftest import sandbox_containers

    bots(1)
    slow = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> agent=cursor [transcript:direct-sleep]")
    fake.push_event(slow)
    [question] = wait_for(lambda: [q for q in _all_questions(redis) if q.origin.message_ts == slow["ts"]], 10, "job")
    wait_for(
        lambda: _state(redis, question.id) == "running" and sandbox_containers(docker_client), 60, "the agent to run"
    )
    assert fake.session_status(CHANNEL, slow["ts"]) == "processing"  # the stop button is shown
    stopped_at = time.monotonic()
    fake.push_event(fake.agent_session_stopped(ASKER, CHANNEL, slow["ts"]))
    wait_for(lambda: not sandbox_containers(docker_client), 10, "the sandbox to go")
    gone_after = time.monotonic() - stopped_at
    final_reaction(fake, slow["ts"], "no_entry_sign", timeout=30)
    fake.wait_until(lambda: fake.session_status(CHANNEL, slow["ts"]) == "closed", timeout=10)
    texts = [m.text or "" for m in bot_replies(fake, slow["ts"])]
    assert sum(f"Cancelled by <@{ASKER}>" in t for t in texts) == 1, texts  # the thread says who
    assert gone_after < 3.0, f"the sandbox outlived the stop by {gone_after:.1f} s"
    print(f"stop button -> sandbox gone in {gone_after:.2f} s")

    fake.push_event(fake.agent_session_stopped(ASKER, CHANNEL, slow["ts"]))  # a stop for a finished question
    [late] = fake.wait_until(lambda: fake.ephemerals(CHANNEL), timeout=10)
    assert late.ephemeral_to == ASKER and "already finished" in late.text
    covered_by_the_manifest(fake)


def test_a_bot_dying_after_the_ack_leaves_the_status_message_to_the_worker(fake, workers, redis_server, repo, tmp_path):
    """Acknowledged (the question is queued), then the bot dies before posting anything: the
    worker posts the status message itself, once, and answers once."""
    import subprocess

    from tests.integration.pipeline_helpers import ASKBOX

    env = {**bot_env(fake, redis_server.url, repo), "ASKBOX_TEST_CRASH_AT": "before-reply"}
    proc = subprocess.Popen(
        [ASKBOX, "bot"], env=env, stdout=(tmp_path / "dying-bot.log").open("w"), stderr=subprocess.STDOUT
    )
    try:
        fake.wait_connections(1, timeout=30)
        mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> agent=cursor [read:README.md] what?")
        envelope = fake.push_event(mention)
        assert proc.wait(timeout=10) == 137  # died in its reply, after the claim and the job
        final_reaction(fake, mention["ts"], "white_check_mark")
    finally:
        proc.kill()
    replies = bot_replies(fake, mention["ts"])
    statuses = [m for m in replies if (m.metadata or {}).get("event_type") == "askbox_status"]
    assert len(statuses) == 1 and statuses[0].text.startswith(":white_check_mark: Answered"), [m.text for m in replies]
    assert sum("demo repo" in (m.text or "") + json.dumps(m.blocks or []) for m in replies) == 1
    print(f"ack sent before the bot died: {envelope.envelope_id in fake.acks()}")
