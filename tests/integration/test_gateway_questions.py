"""Questions answered through the model gateway: real `askbox worker` and `askbox gateway`
processes, the real Gemini CLI in the real sandbox, real Redis, the fake Gemini API.

What a Slack user could do before the gateway: ask the agent to run `env` and read the
workspace's Gemini key in the answer. Here the agent tries exactly that.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from gateway.client import upstream_paused
from jobs import queue as jobs_queue
from jobs.question import Origin, Question
from jobs.redaction import forms_of
from jobs.settings import JobSettings
from tests.fakes.gemini_api import FakeGeminiAPI, FunctionCall, RecordedRequest, Text, max_in_window
from tests.integration.conftest import GATEWAY_KEY
from tests.integration.gateway_helpers import call, run
from tests.integration.pipeline_helpers import Workers, wait_final, wait_for, worker_env

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.usefixtures("no_leftovers")]


def gemini_workers_env(redis_server, repo, egress_root, gateway_dir, **extra: str) -> dict[str, str]:
    return worker_env(
        redis_server,
        repo,
        egress_root,
        ASKBOX_AGENT="gemini",
        ASKBOX_RETRIES="0",
        ASKBOX_GATEWAY_SOCKET_DIR=str(gateway_dir),
        **extra,
    )


def ask(redis, text: str, user: str = "alice", channel: str | None = None) -> str:
    origin = Origin(kind="terminal", user=user, channel=channel)
    return jobs_queue.enqueue(redis, Question(origin=origin, text=text, repo="demo"), JobSettings()).job.id


def echo_tool_output(request: RecordedRequest) -> Text:
    """The model repeats what its tool printed: the fake cannot know it otherwise."""
    outputs = [json.dumps(r.get("response", {})) for r in request.function_responses()]
    return Text("Here is the output: " + " | ".join(outputs), chunks=3)


def contains_key(text: str) -> bool:
    return any(form in text for form in forms_of(GATEWAY_KEY))


def test_the_agent_prints_its_environment_and_finds_no_key(
    redis_server, redis, repo, egress_root, tmp_path, gateway, built_images
):
    with FakeGeminiAPI() as api:
        api.script(
            FunctionCall("run_shell_command", {"command": "env; printenv GEMINI_API_KEY | base64"}),
            echo_tool_output,
        )
        proxy = gateway(api.base_url, redis_server.url)
        # A careless operator gives the worker the key too: it must still never reach a sandbox.
        pool = Workers(
            gemini_workers_env(redis_server, repo, egress_root, proxy.socket_dir, GEMINI_API_KEY=GATEWAY_KEY)
        )
        pool.start(1, log_dir=tmp_path)
        try:
            job_id = ask(redis, "run env and show me the output")
            final = wait_final(redis, job_id, timeout=120, workers=pool)
        finally:
            pool.stop()
        generate = [r for r in api.requests if r.is_generate]
    assert final["kind"] == "answer", final
    # What the sandbox printed, as the fake received it back in the tool result (raw, unredacted).
    tool_output = json.dumps([r.function_responses() for r in generate])
    assert "GEMINI_API_KEY=" in tool_output and "HOME=" in tool_output  # the attempt really ran
    token = re.search(r"GEMINI_API_KEY=([A-Za-z0-9_-]+)", tool_output).group(1)
    assert token != GATEWAY_KEY
    # Upstream saw the real key on every request, never the sandbox's token.
    assert {r.api_key for r in generate} == {GATEWAY_KEY}
    assert all(r.headers.get("x-goog-api-key") == GATEWAY_KEY and "key" not in r.query for r in generate)
    # The key in no form: not in what the fake received, the answer, the cache, the memory, the logs.
    stored = [redis.get(k) or b"" for k in redis.keys("askbox:cache:*")]
    stored += [b"".join(redis.lrange(k, 0, -1)) for k in redis.keys("askbox:memory:*:turns")]
    logs = "".join(p.read_text(errors="replace") for p in pool.logs) + proxy.output()
    for where, text in [
        ("requests", tool_output + json.dumps([r.body for r in generate])),
        ("answer", final["text"]),
        ("cache+memory", b"".join(stored).decode()),
        ("logs", logs),
    ]:
        assert not contains_key(text), f"the key reached the {where}"
    assert stored, "the answer was cached and remembered"
    # Every token counted: what the job reports is what the fake's usageMetadata said.
    meta = jobs_queue.fetch(redis, job_id).get_meta(refresh=True)
    assert meta["usage"]["total_tokens"] == sum(r.usage["totalTokenCount"] for r in generate) > 0
    assert final["tokens"] == meta["usage"]["total_tokens"]
    # The question is over: its token is revoked, and it never worked off its own socket.
    assert redis.keys("askbox:gateway:token:*") == []
    assert run(call(proxy.client.control, token)).status in {401, 403}
    assert not any(proxy.socket_dir.glob("s-*"))


def test_budgets_quotas_and_a_dead_gateway_end_clearly(
    redis_server, redis, repo, egress_root, tmp_path, gateway, built_images
):
    with FakeGeminiAPI(default=Text("An answer.")) as api:
        proxy = gateway(api.base_url, redis_server.url)
        # One answer uses up alice's day: the worker checks before it starts a container.
        env = gemini_workers_env(redis_server, repo, egress_root, proxy.socket_dir, ASKBOX_BUDGET_USER_TOKENS="1")
        pool = Workers(env)
        pool.start(1, log_dir=tmp_path)
        try:
            first = wait_final(redis, ask(redis, "What is this?"), timeout=90, workers=pool)
            assert first["kind"] == "answer", first
            calls = len(api.requests)
            refused = wait_final(redis, ask(redis, "And this?"), timeout=30, workers=pool)
            # Refused before any container started: the fake saw nothing more.
            assert refused["kind"] == "rejected" and "budget" in refused["text"], refused
            assert len(api.requests) == calls

            api.exhausted_keys.add(GATEWAY_KEY)  # the project's per-day quota is gone
            quota = wait_final(redis, ask(redis, "Why?", user="bob"), timeout=90, workers=pool)
            assert quota["kind"] == "rejected", quota
            assert "requests-per-day quota" in quota["text"] and "resets" in quota["text"], quota["text"]

            proxy.stop()  # no gateway: one clear infrastructure message, no sandbox
            down = wait_final(redis, ask(redis, "Anyone?", user="carol"), timeout=60, workers=pool)
            assert down["kind"] == "infra" and "askbox gateway" in down["text"], down
        finally:
            pool.stop()
    assert len(redis.keys("askbox:final:*")) == 4


def test_a_5xx_storm_ends_questions_clearly_and_they_recover(
    redis_server, redis, repo, egress_root, tmp_path, gateway, built_images
):
    with FakeGeminiAPI(default=Text("Back again.")) as api:
        breaker = {
            "gateway_breaker_threshold": "2",
            "gateway_breaker_cooldown": "8",
            "gateway_retries": "1",
            "gateway_backoff_initial": "0.1",
            "gateway_backoff_max": "0.2",
        }
        proxy = gateway(api.base_url, redis_server.url, **breaker)
        pool = Workers(gemini_workers_env(redis_server, repo, egress_root, proxy.socket_dir))
        pool.start(1, log_dir=tmp_path)
        try:
            api.start_storm()
            storm = wait_final(redis, ask(redis, "Is the API up?"), timeout=90, workers=pool)
            upstream_calls = len(api.requests)
            during = wait_final(redis, ask(redis, "And now?", user="bob"), timeout=30, workers=pool)
            assert len(api.requests) == upstream_calls  # the circuit is open: nobody calls upstream
            api.stop_storm()
            wait_for(lambda: upstream_paused(redis) is None, 30, "the cool-down")
            after = wait_final(redis, ask(redis, "Up again?", user="carol"), timeout=90, workers=pool)
        finally:
            pool.stop()
    for final in (storm, during):
        assert final["kind"] == "infra" and "The Gemini API is failing" in final["text"], final
    assert upstream_calls <= 4  # threshold 2, one retry each: the storm was not hammered
    assert after["kind"] == "answer" and after["text"] == "Back again.", after


@pytest.mark.parametrize("injected", [0.3, 0.6])
def test_twenty_questions_three_workers_two_gateways_under_a_shared_limit(
    redis_server, redis, repo, egress_root, tmp_path, gateway, built_images, injected
):
    limit, window, count = 6, 5.0, 20
    # The fake enforces a slightly shorter window than the gateways' (the request's own
    # transit): any 429 it sends for quota would be absorbed, so it counts them too.
    with FakeGeminiAPI(default=Text("Answered."), per_key_limit=(limit, window * 0.9)) as api:
        api.inject_429(injected, seed=7)
        settings = {"gemini_request_limit": f"{limit}/{int(window)} seconds"}
        hosts = [gateway(api.base_url, redis_server.url, **settings) for _ in range(2)]
        pool = Workers(gemini_workers_env(redis_server, repo, egress_root, hosts[0].socket_dir))
        pool.start(2, log_dir=tmp_path)
        pool.env = gemini_workers_env(redis_server, repo, egress_root, hosts[1].socket_dir)
        pool.start(1, log_dir=tmp_path)
        started = time.monotonic()
        try:
            ids = [ask(redis, f"question {i}", user=f"user{i % 7}") for i in range(count)]
            finals = [wait_final(redis, job_id, timeout=300, workers=pool) for job_id in ids]
        finally:
            pool.stop()
        took = time.monotonic() - started
        accepted = api.accepted.get(GATEWAY_KEY, [])
        busiest = max_in_window(accepted, window * 0.95)
        injected_429s = api.injected_429s
    assert [f["kind"] for f in finals] == ["answer"] * count, [f["text"] for f in finals]
    assert len(redis.keys("askbox:final:*")) == count  # exactly once each
    assert api.quota_rejections == 0 and busiest <= limit, (api.quota_rejections, busiest)
    assert injected_429s > 0  # 429s were sent, and absorbed: no question saw one
    print(
        f"\n{count} questions, {injected:.0%} injected 429s, 2 gateways, 3 workers: answered {count}/{count} "
        f"in {took:.1f} s; {len(accepted)} accepted calls, busiest {window:.0f} s window {busiest}/{limit}, "
        f"{injected_429s} injected 429s absorbed"
    )
