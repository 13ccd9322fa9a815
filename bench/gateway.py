"""The model gateway's cost and benefit, in one run.

1. Per-call overhead: the same streamGenerateContent call (fake Gemini API, one short
   answer) made N times straight to the fake and N times through a real gateway process
   (session socket, token swap, Redis-backed limits, metering); p50/p99 of each. Then the
   same for each provider: a streamed Anthropic Messages call and a streamed OpenAI
   Responses call, straight to its fake and through a gateway serving that provider, in
   the same run: the p50 added per call.
2. Failure rate of 20 concurrent clients at 0/30/60 % injected 429s (retryDelay 1 s),
   straight to the API (one attempt each, as a client without retries) and through the
   gateway.

Runs its own redis-server, so it never touches a developer's data:

    .venv/bin/python bench/gateway.py [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quick import parse_args

from tests.fakes.anthropic_api import FakeAnthropicAPI
from tests.fakes.gemini_api import FakeGeminiAPI
from tests.fakes.llm_api import Text
from tests.fakes.openai_api import FakeOpenAIAPI
from tests.integration.gateway_helpers import GatewayProcess, call, gateway_env, provider_env
from tests.integration.pipeline_helpers import RedisServer

KEY = "bench-real-key"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latencies(calls: int, socket: Path | None, token: str, base_url: str) -> list[float]:
    connector = aiohttp.UnixConnector(path=str(socket)) if socket else aiohttp.TCPConnector()
    async with aiohttp.ClientSession(connector=connector) as session:  # keep-alive, like the CLI
        result = []
        for _ in range(calls + 10):
            start = time.perf_counter()
            answer = await call(socket, token, base_url=base_url, session=session)
            assert answer.status == 200, answer.body
            result.append(time.perf_counter() - start)
        return result[10:]  # the first calls warm connections and caches


# One streamed call per provider, as its agent makes it: path, key header, body.
PROVIDER_CALLS = {
    "anthropic": (
        "claude-sonnet-4-5",
        "/v1/messages?beta=true",
        lambda key: {"x-api-key": key},
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 256,
            "stream": True,
            "messages": [{"role": "user", "content": "What does this repo do?"}],
        },
    ),
    "openai": (
        "gpt-5-codex",
        "/v1/responses",
        lambda key: {"authorization": f"Bearer {key}"},
        {"model": "gpt-5-codex", "stream": True, "input": "What does this repo do?"},
    ),
}


async def provider_latencies(
    calls: int, socket: Path | None, base_url: str, path: str, headers: dict[str, str], body: dict
) -> list[float]:
    connector = aiohttp.UnixConnector(path=str(socket)) if socket else aiohttp.TCPConnector()
    async with aiohttp.ClientSession(connector=connector) as session:
        result = []
        for _ in range(calls + 10):
            start = time.perf_counter()
            async with session.post(base_url + path, json=body, headers=headers) as response:
                await response.read()
                assert response.status == 200, await response.text()
            result.append(time.perf_counter() - start)
        return result[10:]


def provider_overhead(calls: int, redis_url: str) -> None:
    print(f"\nper-provider overhead, {calls} streamed calls each (ms)")
    print(f"{'provider':<11}{'direct p50':>11}{'gateway p50':>12}{'added p50':>10}")
    for provider, (model, path, auth, body) in PROVIDER_CALLS.items():
        fake = (
            FakeAnthropicAPI(default=Text("An answer.", chunks=3))
            if provider == "anthropic"
            else FakeOpenAIAPI(default=Text("An answer.", chunks=3))
        )
        with fake:
            upstream = fake.api_url if isinstance(fake, FakeOpenAIAPI) else fake.base_url
            with GatewayProcess(provider_env(provider, upstream, [KEY], redis_url=redis_url)) as gateway:
                session = gateway.open(model=model, provider=provider)
                token = session.token.get_secret_value()
                direct = asyncio.run(provider_latencies(calls, None, fake.base_url, path, auth(KEY), body))
                through = asyncio.run(
                    provider_latencies(calls, session.socket, "http://gateway", path, auth(token), body)
                )
        d, g = percentile(direct, 0.5) * 1e3, percentile(through, 0.5) * 1e3
        print(f"{provider:<11}{d:>11.2f}{g:>12.2f}{g - d:>10.2f}")


async def failure_rate(targets: list[tuple[Path | None, str]], base_url: str) -> tuple[float, float]:
    start = time.monotonic()
    answers = await asyncio.gather(*(call(s, t, base_url=base_url) for s, t in targets))
    return sum(a.status != 200 for a in answers) / len(answers), time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    args = parse_args(parser, calls=5, clients=3)
    with tempfile.TemporaryDirectory() as tmp, FakeGeminiAPI() as fake:
        redis = RedisServer(Path(tmp)).start()
        try:
            with GatewayProcess(gateway_env(fake.base_url, [KEY], redis_url=redis.url)) as gateway:
                session = gateway.open()
                token = session.token.get_secret_value()
                direct = asyncio.run(latencies(args.calls, None, KEY, fake.base_url))
                through = asyncio.run(latencies(args.calls, session.socket, token, "http://gateway"))
                print(f"\nper-call latency, {args.calls} calls each (ms)")
                print(f"{'path':<10}{'p50':>8}{'p99':>8}")
                for name, values in (("direct", direct), ("gateway", through)):
                    print(f"{name:<10}{percentile(values, 0.5) * 1e3:>8.2f}{percentile(values, 0.99) * 1e3:>8.2f}")
                overhead = (percentile(through, 0.5) - percentile(direct, 0.5)) * 1e3
                print(f"overhead p50: {overhead:.2f} ms")
            provider_overhead(args.calls, redis.url)
            with GatewayProcess(gateway_env(fake.base_url, [KEY], redis_url=redis.url)) as gateway:
                sessions = [gateway.open(user=f"U{i}") for i in range(args.clients)]
                via = [(s.socket, s.token.get_secret_value()) for s in sessions]
                print(f"\n{args.clients} concurrent clients, injected 429s (retryDelay 1s): failure rate")
                print(f"{'injected':<10}{'direct':>10}{'gateway':>10}{'gateway s':>11}")
                for rate in (0.0, 0.3, 0.6):
                    fake.inject_429(rate, seed=1)
                    plain, _ = asyncio.run(failure_rate([(None, KEY)] * args.clients, fake.base_url))
                    fake.inject_429(rate, seed=1)
                    fronted, took = asyncio.run(failure_rate(via, "http://gateway"))
                    print(f"{rate:<10.0%}{plain:>10.0%}{fronted:>10.0%}{took:>11.1f}")
        finally:
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
