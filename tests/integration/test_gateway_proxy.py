"""The model gateway as the Gemini CLI meets it: real gateway processes, real Redis (db 15),
the fake Gemini API over real HTTP. Per-question tokens, streaming, metering, the per-day
quota, the circuit breaker, budgets, TTL expiry."""

from __future__ import annotations

import time
import urllib.request

import aiohttp
import pytest
from redis import Redis

from gateway.client import SessionMeta, check_budget, session_state
from gateway.settings import GatewaySettings
from jobs import keys
from tests.fakes.gemini_api import FakeGeminiAPI, Text
from tests.integration.gateway_helpers import (
    GENERATE_PATH,
    GatewayProcess,
    call,
    gateway_env,
    request_body,
    run,
)
from tests.integration.pipeline_helpers import free_port, wait_for

pytestmark = pytest.mark.redis
KEYS = ["real-key-one-AIzaSyA", "real-key-two-AIzaSyB"]


@pytest.fixture()
def fake():
    with FakeGeminiAPI() as api:
        yield api


def start_gateway(fake: FakeGeminiAPI, keys: list[str] = KEYS, **settings: str) -> GatewayProcess:
    return GatewayProcess(gateway_env(fake.base_url, keys, **settings)).start()


def test_token_is_swapped_for_a_real_key_and_useless_anywhere_else(redis_client: Redis, fake: FakeGeminiAPI):
    with start_gateway(fake) as gateway:
        a, b = gateway.open(user="UA"), gateway.open(user="UB")
        token_a, token_b = a.token.get_secret_value(), b.token.get_secret_value()
        assert token_a not in repr(a)
        answer = run(call(a.socket, token_a))
        assert answer.status == 200, answer.body
        assert run(call(a.socket, token_a, GENERATE_PATH, use_query=True)).status == 200
        seen = fake.generate_requests
        assert len(seen) == 2 and {r.api_key for r in seen} <= set(KEYS)
        for r in fake.requests:  # the token never leaves the gateway, in any part
            assert token_a not in repr(r.headers) + repr(r.query) + r.raw_body.decode()
            assert "key" not in r.query

        refused = [
            run(call(a.socket, token_b)),  # another session's token on this socket
            run(call(b.socket, token_a)),
            run(call(a.socket, "not-a-token")),
            run(call(a.socket, "")),
            run(call(gateway.socket_dir / "control.sock", token_a)),  # the control socket
        ]
        assert [r.status for r in refused] == [401, 401, 401, 401, 403]
        assert all(r.json()["error"]["status"] in ("UNAUTHENTICATED", "PERMISSION_DENIED") for r in refused)

        gateway.client.close(a)
        gateway.client.close(a)  # idempotent
        assert not a.socket_dir.exists()
        assert run(call(b.socket, token_a)).status == 401  # revoked, and never valid elsewhere
        with pytest.raises(aiohttp.ClientConnectionError):
            run(call(a.socket, token_a))
        assert redis_client.get(keys.gateway_token(keys.token_hash(token_a))) is None
        assert redis_client.get(keys.gateway_token(keys.token_hash(token_b))) is not None
        assert len(fake.requests) == 2  # nothing refused reached upstream


def test_sse_chunks_reach_the_client_as_the_fake_sends_them(redis_client: Redis, fake: FakeGeminiAPI):
    fake.script(Text("one two three four", chunks=4, delay=0.4))
    with start_gateway(fake) as gateway:
        session = gateway.open()
        answer = run(call(session.socket, session.token.get_secret_value()))
    assert answer.status == 200
    assert "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in answer.events()) == "one two three four"
    first, last = answer.chunks[0][0] - answer.started, answer.chunks[-1][0] - answer.started
    # The fake sends the last chunk 3 x 0.4 s after the first; buffered, they would arrive
    # together. Half the spread allows for a loaded machine delaying the first.
    assert last >= 1.2
    assert last - first >= 0.6, f"first chunk {first:.2f} s, last {last:.2f} s: buffered"
    assert len(answer.chunks) >= 4


def test_every_token_is_metered_to_session_user_and_channel(redis_client: Redis, fake: FakeGeminiAPI):
    fake.script(Text("a short answer", chunks=3), Text("x" * 400, chunks=5, thought="hmm"), Text("plain"))
    port = free_port()
    with start_gateway(fake, gateway_metrics_port=str(port)) as gateway:
        session = gateway.open(user="UMETER", channel="CMETER")
        token = session.token.get_secret_value()
        run(call(session.socket, token, body=request_body("first question")))
        run(call(session.socket, token, body=request_body("second, longer question " * 20)))
        run(call(session.socket, token, GENERATE_PATH))
        state = session_state(redis_client, session.id)

        def scraped() -> str | None:
            # The request's outcome is counted after its last byte went out: the client may
            # read the answer a moment before the gateway counts it.
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            return text if 'askbox_gateway_requests_total{outcome="ok"} 3.0' in text else None

        exposition = wait_for(scraped, 10, "the third request counted") or ""
    sent = [r.usage for r in fake.generate_requests]
    assert len(sent) == 3 and all(sent)
    assert state.prompt_tokens == sum(u["promptTokenCount"] for u in sent)
    assert state.candidates_tokens == sum(u["candidatesTokenCount"] for u in sent)
    assert state.total_tokens == sum(u["totalTokenCount"] for u in sent)
    assert state.requests == 3 and state.stop_reason is None
    assert state.cost_usd > 0
    total_line = f'askbox_gateway_tokens_total{{kind="total",model="gemini-2.5-flash"}} {float(state.total_tokens)}'
    assert total_line in exposition
    assert 'askbox_gateway_requests_total{outcome="ok"} 3.0' in exposition
    assert "askbox_gateway_cost_usd_total" in exposition and "askbox_gateway_wait_seconds_bucket" in exposition
    for kind, name in (("user", "UMETER"), ("channel", "CMETER")):
        daily = redis_client.hgetall(keys.daily_usage(kind, name))
        assert int(daily[b"tokens"]) == state.total_tokens
        assert 0 < redis_client.ttl(keys.daily_usage(kind, name)) <= keys.DAILY_TTL


def test_per_day_quota_is_not_retried_and_stops_the_session(redis_client: Redis, fake: FakeGeminiAPI):
    fake.exhausted_keys = set(KEYS)
    with start_gateway(fake) as gateway:
        session = gateway.open()
        token = session.token.get_secret_value()
        answer = run(call(session.socket, token))
        assert answer.status == 429
        assert len(fake.generate_requests) == 2  # each key tried once, no retries
        reason = session_state(redis_client, session.id).stop_reason
        assert reason and "requests-per-day" in reason and "all 2 keys" in reason and "UTC" in reason
        assert "PerDay" in reason and answer.json()["error"]["message"] == reason
        assert run(call(session.socket, token)).status == 429
        assert len(fake.generate_requests) == 2  # refused without reaching upstream


def test_our_own_daily_limit_stops_the_session(redis_client: Redis, fake: FakeGeminiAPI):
    with start_gateway(fake, keys=KEYS[:1], gemini_daily_limit="2/day") as gateway:
        session = gateway.open()
        token = session.token.get_secret_value()
        assert [run(call(session.socket, token)).status for _ in range(3)] == [200, 200, 429]
        reason = session_state(redis_client, session.id).stop_reason
    assert reason and "2/day" in reason and "its only key" in reason
    assert len(fake.generate_requests) == 2


def test_5xx_storm_opens_the_breaker_then_it_recovers(redis_client: Redis, fake: FakeGeminiAPI):
    fake.start_storm()
    settings = dict(
        gateway_breaker_threshold="3",
        gateway_breaker_cooldown="1.5",
        gateway_retries="1",
        gateway_backoff_initial="0.05",
        gateway_backoff_max="0.1",
    )
    with start_gateway(fake, **settings) as gateway:
        session = gateway.open()
        token = session.token.get_secret_value()
        first = run(call(session.socket, token))  # 2 attempts (1 retry), both 503
        assert first.status == 503 and len(fake.generate_requests) == 2
        second = run(call(session.socket, token))  # the third failure opens the circuit
        assert second.status == 503 and len(fake.generate_requests) == 3
        fast = run(call(session.socket, token))
        assert fast.status == 503
        assert "paused" in fast.json()["error"]["message"]
        assert len(fake.generate_requests) == 3  # open: upstream not called
        fake.stop_storm()
        time.sleep(1.6)
        assert run(call(session.socket, token)).status == 200  # half-open trial closes it
        assert run(call(session.socket, token)).status == 200
        assert redis_client.hget(keys.breaker("gemini"), "open_until") is None


def test_budget_crossed_mid_run_stops_the_session(redis_client: Redis, fake: FakeGeminiAPI):
    with start_gateway(fake, budget_user_tokens="20") as gateway:
        session = gateway.open(user="USPEND")
        token = session.token.get_secret_value()
        assert run(call(session.socket, token)).status == 200  # crosses 20 tokens
        refused = run(call(session.socket, token))
        reason = session_state(redis_client, session.id).stop_reason
    assert refused.status == 429 and reason and "budget" in reason and "USPEND" in reason
    assert refused.json()["error"]["message"] == reason
    assert len(fake.generate_requests) == 1
    settings = GatewaySettings(budget_user_tokens=20)
    assert check_budget(redis_client, settings, SessionMeta(job_id="j2", user="USPEND")) is not None
    assert check_budget(redis_client, settings, SessionMeta(job_id="j2", user="USPEND", budget_exempt=True)) is None
    assert check_budget(redis_client, settings, SessionMeta(job_id="j3", user="UOTHER")) is None


def test_expired_sessions_are_swept(redis_client: Redis, fake: FakeGeminiAPI):
    with start_gateway(fake, gateway_sweep_interval="0.2") as gateway:
        session = gateway.open(ttl=1)
        assert session.socket.exists()
        deadline = time.monotonic() + 5
        while session.socket_dir.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not session.socket_dir.exists()
        assert redis_client.get(keys.gateway_session(session.id)) is None
