"""What a question's calls may spend, through real gateway processes, real Redis and the
fake Gemini API: spend reserved before a call goes upstream and settled after, so calls
in parallel cannot overrun a budget; answers that report no usage, and streams the client
cut, are charged their reservation; a question has at most N calls in flight; countTokens
is paced like any call; a model without a price pays the most expensive one."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from redis import Redis

from gateway.client import session_state
from gateway.metering import estimate_cost
from gateway.settings import DEFAULT_PRICES
from gateway.usage import Usage
from jobs import keys
from tests.fakes.gemini_api import FakeGeminiAPI, Text
from tests.integration.gateway_helpers import (
    GENERATE_PATH,
    MODEL,
    STREAM_PATH,
    GatewayProcess,
    call,
    gateway_env,
    request_body,
    run,
)
from tests.integration.pipeline_helpers import wait_for

pytestmark = pytest.mark.redis
KEYS = ["real-key-one-AIzaSyA", "real-key-two-AIzaSyB"]
COUNT_PATH = f"/v1beta/models/{MODEL}:countTokens"
OUTPUT_RESERVE = 1000  # ASKBOX_GATEWAY_RESERVE_OUTPUT_TOKENS in these tests


def start(fake: FakeGeminiAPI, keys_: list[str] = KEYS, **settings: str) -> GatewayProcess:
    settings.setdefault("gateway_reserve_output_tokens", str(OUTPUT_RESERVE))
    return GatewayProcess(gateway_env(fake.base_url, keys_, **settings)).start()


def reserved_tokens(body: dict[str, Any], output: int = OUTPUT_RESERVE) -> int:
    """What the gateway reserves for ``body``: its size as forwarded, plus the answer's cap."""
    return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()) + output


def token(session: Any) -> str:
    return session.token.get_secret_value()


async def together(*calls: Any) -> list[Any]:
    return await asyncio.gather(*calls)


@pytest.mark.parametrize("budget", ["tokens", "usd"])
def test_twenty_parallel_calls_spend_at_most_the_budget_plus_one_reservation(redis_client: Redis, budget: str):
    body = {**request_body("How much may I spend?"), "generationConfig": {"maxOutputTokens": 50}}
    reservation = reserved_tokens(body, 50)
    reservation_usd = estimate_cost(DEFAULT_PRICES, MODEL, Usage(prompt=reservation - 50, candidates=50))
    limit, field, setting = (
        (300, "tokens", {"budget_user_tokens": "300"})
        if budget == "tokens"
        else (3 * reservation_usd, "cost_usd", {"budget_user_usd": str(3 * reservation_usd)})
    )
    with FakeGeminiAPI(default=Text("y" * 40, chunks=2, delay=0.3)) as fake:
        with start(fake, **setting) as gateway:
            sessions = [gateway.open(user="UBURST", channel=f"C{i}") for i in range(20)]
            answers = run(together(*(call(s.socket, token(s), body=body) for s in sessions)))
            spent = float(redis_client.hget(keys.daily_usage("user", "UBURST"), field) or 0)
            held = redis_client.keys("askbox:gateway:reserved:*")
            left = [redis_client.hlen(k) for k in held]
    served = [a for a in answers if a.status == 200]
    print(
        f"{budget}: {len(served)}/20 served, spent {spent} of {limit} (one reservation: "
        f"{reservation} tokens, ${reservation_usd:.6f})"
    )
    assert spent <= limit + (reservation if budget == "tokens" else reservation_usd)
    assert len(served) == len(fake.generate_requests) < 20
    assert spent >= limit  # the budget was used, not refused early
    for refused in (a for a in answers if a.status != 200):
        assert refused.status == 429 and "daily Gemini budget is used up" in refused.json()["error"]["message"]
    # Every served answer was metered from its usage; nothing is left reserved.
    fake_spend = [r.usage["totalTokenCount"] for r in fake.generate_requests]
    if budget == "tokens":
        assert spent == sum(fake_spend)
    assert left == [0] * len(left)


def test_a_client_hanging_up_after_the_first_chunk_pays_its_reservation(redis_client: Redis):
    body = request_body("Start answering, I will leave.")
    with FakeGeminiAPI(default=Text("one two three four", chunks=3, delay=1.0)) as fake:
        with start(fake) as gateway:
            session = gateway.open(user="UCUT", channel="CCUT")

            async def first_chunk_then_hang_up() -> bytes:
                connector = aiohttp.UnixConnector(path=str(session.socket))
                async with aiohttp.ClientSession(connector=connector) as http:
                    response = await http.post(
                        "http://gateway" + STREAM_PATH, json=body, headers={"x-goog-api-key": token(session)}
                    )
                    first = await response.content.readany()
                    response.close()  # drops the connection mid-stream
                    return first

            first = run(first_chunk_then_hang_up())
            state = wait_for(lambda: (s := session_state(redis_client, session.id)).requests and s, 10, "the settling")
            daily = redis_client.hgetall(keys.daily_usage("user", "UCUT"))
    assert first.startswith(b"data:") and b"one" in first
    assert state.total_tokens == reserved_tokens(body) and state.estimated_requests == 1
    assert int(daily[b"tokens"]) == state.total_tokens
    streamed = json.loads(first[5:])["usageMetadata"]["totalTokenCount"]
    assert streamed < state.total_tokens  # the old charge: the first chunk's usage only
    assert state.cost_usd == pytest.approx(
        estimate_cost(
            DEFAULT_PRICES, MODEL, Usage(prompt=reserved_tokens(body) - OUTPUT_RESERVE, candidates=OUTPUT_RESERVE)
        )
    )


@pytest.mark.parametrize("path", [STREAM_PATH, GENERATE_PATH])
def test_an_answer_without_usage_is_charged_its_reservation(redis_client: Redis, path: str):
    body = request_body("Answer without saying what it cost.")
    with FakeGeminiAPI() as fake:
        fake.script(Text("an answer nobody metered", chunks=2, usage=False))
        with start(fake) as gateway:
            session = gateway.open(user="USILENT")
            answer = run(call(session.socket, token(session), path, body=body))
            state = session_state(redis_client, session.id)
    assert answer.status == 200 and b"usageMetadata" not in answer.body
    assert fake.generate_requests[0].usage is None
    assert state.total_tokens == reserved_tokens(body) and state.estimated_requests == 1 and state.cost_usd > 0


def test_a_question_has_at_most_two_calls_in_flight(redis_client: Redis):
    with FakeGeminiAPI(default=Text("slow answer", chunks=2, delay=1.0)) as fake:
        with start(fake) as gateway:
            session = gateway.open()
            answers = run(together(*(call(session.socket, token(session)) for _ in range(5))))
            later = run(call(session.socket, token(session)))  # the slots are free again
    assert sorted(a.status for a in answers) == [200, 200, 429, 429, 429]
    for refused in (a for a in answers if a.status == 429):
        assert "at most 2 model requests at once" in refused.json()["error"]["message"]
    assert later.status == 200
    assert len(fake.generate_requests) == 3  # the refused never left


def test_count_tokens_is_paced_and_never_on_a_cooling_key(redis_client: Redis):
    with FakeGeminiAPI() as fake:
        with start(fake) as gateway:
            session = gateway.open()
            # Key one waits out an upstream 429's retryDelay, as every gateway sees in Redis.
            redis_client.set(keys.key_cooldown(keys.key_id(KEYS[0])), "1", px=60_000)
            answers = [run(call(session.socket, token(session), COUNT_PATH)) for _ in range(10)]
            state = session_state(redis_client, session.id)
    assert [a.status for a in answers] == [200] * 10
    assert {r.api_key for r in fake.requests} == {KEYS[1]}
    assert state.total_tokens == 0 and state.cost_usd == 0  # countTokens is not billed


def test_a_model_without_a_price_pays_the_most_expensive_one(redis_client: Redis):
    model = "learnlm-2.0-flash-experimental"
    with FakeGeminiAPI() as fake:
        with start(fake) as gateway:
            session = gateway.open(model=model)
            answer = run(call(session.socket, token(session), f"/v1beta/models/{model}:generateContent"))
            state = session_state(redis_client, session.id)
    assert answer.status == 200
    sent = fake.generate_requests[0].usage
    usage = Usage(prompt=sent["promptTokenCount"], candidates=sent["candidatesTokenCount"])
    assert (
        state.cost_usd
        == pytest.approx(estimate_cost({"gemini-2.5-pro": DEFAULT_PRICES["gemini-2.5-pro"]}, "gemini-2.5-pro", usage))
        and state.cost_usd > 0
    )


def test_a_question_budget_ends_that_question_only(redis_client: Redis):
    with FakeGeminiAPI() as fake:
        with start(fake, budget_question_tokens="20") as gateway:
            first, second = gateway.open(user="UQ"), gateway.open(user="UQ")
            assert run(call(first.socket, token(first))).status == 200  # crosses 20 tokens
            refused = run(call(first.socket, token(first)))
            other = run(call(second.socket, token(second)))
            reason = session_state(redis_client, first.id).stop_reason
    assert refused.status == 429 and reason and "This question's Gemini budget is used up" in reason
    assert other.status == 200 and len(fake.generate_requests) == 2
