"""One rate limit for the whole deployment: two gateway processes (as two hosts would)
sharing one Redis never let the fake Gemini API see more than N requests per window per
key, and every client request still succeeds, also with 30 % and 60 % injected 429s."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis import Redis

from tests.fakes.gemini_api import FakeGeminiAPI, max_in_window
from tests.integration.gateway_helpers import Answer, GatewayProcess, call, gateway_env

pytestmark = pytest.mark.redis
KEYS = ["real-key-one-AIzaSyA", "real-key-two-AIzaSyB"]
N, WINDOW = 5, 2.0  # per key
# The fake enforces a shorter window than the gateways: a request reaches it some time
# after its admission (transit took over 300 ms in a CI run with four test processes), and
# any quota 429 it sends would be absorbed silently. With a margin of a whole second, a
# single 429 for quota means the gateways over-admitted: sharing no limit, two gateways
# would send twice N within the first milliseconds.
FAKE_WINDOW = WINDOW - 1.0
CLIENTS = 20


async def burst(targets: list[tuple[object, str]], base_url: str = "http://gateway") -> list[Answer]:
    return await asyncio.gather(*(call(socket, token, base_url=base_url) for socket, token in targets))


@pytest.mark.parametrize("injected", [0.0, 0.3, 0.6])
def test_two_gateways_share_one_limit_and_absorb_429s(redis_client: Redis, injected: float):
    with FakeGeminiAPI(per_key_limit=(N, FAKE_WINDOW)) as fake:
        fake.inject_429(injected, seed=7, retry_delay="0.2s")
        env = gateway_env(fake.base_url, KEYS, gemini_request_limit=f"{N}/{WINDOW:g} second")
        with GatewayProcess(dict(env)) as one, GatewayProcess(dict(env)) as two:
            sessions = [(one if i % 2 else two).open(user=f"U{i}") for i in range(CLIENTS)]
            started = time.monotonic()
            answers = asyncio.run(burst([(s.socket, s.token.get_secret_value()) for s in sessions]))
            elapsed = time.monotonic() - started
    print(f"elapsed {elapsed:.2f}s, injected {fake.injected_429s}")
    assert [a.status for a in answers] == [200] * CLIENTS, [a.body[:200] for a in answers if a.status != 200]
    assert sum(len(t) for t in fake.accepted.values()) == CLIENTS  # each answered exactly once
    assert fake.quota_rejections == 0
    for key in KEYS:
        assert max_in_window(fake.accepted.get(key, []), FAKE_WINDOW) <= N, key  # arrivals, jitter allowed
    assert set(fake.accepted) == set(KEYS)  # spread over the pool
    if injected:
        assert fake.injected_429s > 0
    # 20 requests at 2 keys x 5/s need at least one full window after the first ten.
    assert elapsed >= WINDOW


def test_without_the_gateway_the_same_burst_fails(redis_client: Redis):
    """The control: straight to the API, the fake's limit refuses a share of the burst
    (so the assertions above can fail)."""
    # A window ten times the gateway's: the burst exceeds the fake's limit however slowly a
    # loaded machine delivers it (at the gateway tests' window, a slow one may not).
    with FakeGeminiAPI(per_key_limit=(N, 10 * WINDOW)) as fake:
        answers = asyncio.run(burst([(None, KEYS[i % 2]) for i in range(CLIENTS)], base_url=fake.base_url))
    assert sum(a.status == 429 for a in answers) >= 1
    assert fake.quota_rejections > 0
