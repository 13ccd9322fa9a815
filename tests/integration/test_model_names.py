"""``model=`` reaches the agent's argv: a name that is an option, carries shell or control
characters, or is not on the agent's list is refused at the bot (the asker is told) and
again in the worker, for a job forged straight into Redis."""

from __future__ import annotations

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from jobs import queue as jobs_queue
from jobs.question import Origin, Question
from tests.integration.conftest import ASKER, CHANNEL
from tests.integration.pipeline_helpers import Workers, wait_final, wait_for, worker_env
from tests.integration.test_bot import queued, settle, socket_bot


@pytest.mark.redis
def test_bot_refuses_a_model_name_and_tells_the_asker(fake, redis_server, redis, repo, tmp_path):
    with socket_bot(fake, redis_server, repo, tmp_path, ASKBOX_CURSOR_MODELS="auto,gpt-5"):
        asked = {
            "--yolo": "That is not a model name. Models for cursor: `auto`, `gpt-5`.",
            "<!channel>": "That is not a model name.",
            "opus-9": "The model `opus-9` is not available for cursor. Available: `auto`, `gpt-5`.",
        }
        mentions = {
            m: fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> model={m} what is this?") for m in asked
        }
        for mention in mentions.values():
            fake.push_event(mention)
        for model, expected in asked.items():
            reply = fake.wait_until(
                lambda m=mentions[model]: [r for r in fake.thread(CHANNEL, m["ts"]) if r.is_bot], timeout=10
            )
            assert expected in reply[0].text, reply[0].text
            assert "<!channel>" not in reply[0].text  # a refused name is never echoed
        fake.push_event(fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> model=gpt-5 and this?"))
        [question] = wait_for(lambda: queued(redis), 5, "the allowed model's question")
        settle(fake)
        assert question.model == "gpt-5" and len(queued(redis)) == 1


@pytest.mark.docker
@pytest.mark.redis
@pytest.mark.usefixtures("no_leftovers")
def test_worker_rejects_a_forged_job_naming_an_option(redis_server, cursor_standin_image, egress_root, repo, tmp_path):
    redis = Redis.from_url(redis_server.url)
    queue = Queue("askbox-default", connection=redis, serializer=JSONSerializer)
    forged = {}
    for i, model in enumerate(["--yolo", "x; rm -rf /workspace", "gpt-5"]):
        payload = Question(
            origin=Origin(kind="terminal", user="mallory"), text="hi", repo="demo", id=f"forged-{i}"
        ).model_dump(mode="json")
        payload["model"] = model  # written into Redis as-is: no bot, no validation on the way
        forged[model] = queue.enqueue_call(jobs_queue.JOB_FUNCTION, args=(payload,), job_id=f"forged-{i}").id
    workers = Workers(
        worker_env(
            redis_server,
            repo,
            egress_root,
            ASKBOX_AGENT="cursor",
            ASKBOX_CURSOR_IMAGE=cursor_standin_image,
            CURSOR_API_KEY="key-for-the-standin",
        )
    )
    try:
        workers.start(1, log_dir=tmp_path)
        for model in ("--yolo", "x; rm -rf /workspace"):
            final = wait_final(redis, forged[model], 60, workers)
            assert final["kind"] == "rejected" and "not a model name" in final["text"], final
        # The same forged route with an allowed name runs: the refusals above are the check's.
        assert wait_final(redis, forged["gpt-5"], 90, workers)["kind"] == "answer"
    finally:
        workers.stop()
