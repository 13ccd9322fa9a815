"""A mention answered end to end: fake Slack -> `askbox bot` -> Redis -> `askbox worker` ->
sandbox -> real agent (the Gemini CLI against a fake Gemini API, or the cursor stand-in)
-> progress and answer back in the fake Slack thread."""

from __future__ import annotations

import json
import random
import secrets

import pytest

from tests.fakes.gemini_api import FakeGeminiAPI, FunctionCall, RecordedRequest, Text
from tests.fakes.slack import FakeSlack
from tests.integration.pipeline_helpers import Workers, wait_for
from tests.integration.conftest import ASKER, CHANNEL, bot_env

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
        ASKBOX_AGENT="gemini", ASKBOX_GATEWAY_SOCKET_DIR=str(proxy.socket_dir),
        ASKBOX_CURSOR_IMAGE=cursor_standin_image, CURSOR_API_KEY="key-for-the-standin",
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

    gemini_api.script(FunctionCall("read_file", {"file_path": "secret.txt"}), answer_with_file,
                      Text("Still the same token."))
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
        f"Paragraph {i}: " + " ".join(rng.choice(words) + str(rng.randrange(1000)) for _ in range(50))
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
    assert len(files) == 1, ([(m.text or "")[:80] for m in replies], [c.response for c in fake.calls("files.completeUploadExternal")], [c.response for c in fake.calls("files.getUploadURLExternal")], workers.tail(15))
    assert files[0].name == "answer.md"
    assert files[0].content.decode() == long_answer
    assert all(len(m.text or "") <= 40_000 for m in replies)


def _all_questions(redis):
    from jobs.queue import fetch
    from jobs.question import Question

    from rq.exceptions import NoSuchJobError

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

