"""Side tasks on any provider the gateway serves (``ASKBOX_SIDE_PROVIDER``): triage's
structured verdict and a plain-text summary through a real `askbox gateway` to the fake
Anthropic Messages API and the fake OpenAI Chat Completions API (the self-hosted set-up:
an OpenAI-compatible server without a key), with the side tasks' model, the real key (or
none) upstream, and the usage metered.
"""

from __future__ import annotations

import json

import pytest
from redis import Redis

from gateway.client import SessionMeta
from jobs.memory import Conversation
from jobs.side_tasks.settings import GeminiSettings
from jobs.side_tasks.side_call import GeminiCalls
from jobs.side_tasks.triage import Verdict, triage
from tests.fakes.anthropic_api import FakeAnthropicAPI
from tests.fakes.llm_api import RecordedRequest, Text
from tests.fakes.openai_api import FakeOpenAIAPI
from tests.integration.gateway_helpers import GatewayProcess, provider_env

pytestmark = [pytest.mark.redis]
KEY = "sk-side-task-real-key"


def verdict(request: RecordedRequest) -> Text:
    system = json.dumps(request.body)
    if "sort the messages" in system:
        return Text(json.dumps({"needs_code": False, "reply": "Hello! Ask me about the code."}))
    return Text("A short summary.")


@pytest.mark.parametrize(
    ("provider", "keys"), [("anthropic", [KEY]), ("openai", [])], ids=["anthropic", "openai-self-hosted-keyless"]
)
def test_triage_and_a_summary_on_another_provider(provider: str, keys: list[str], redis_client) -> None:
    fake = FakeAnthropicAPI(default=verdict) if provider == "anthropic" else FakeOpenAIAPI(default=verdict)
    model = "claude-haiku-4-5" if provider == "anthropic" else "qwen3-coder"
    with fake:
        upstream = fake.api_url if isinstance(fake, FakeOpenAIAPI) else fake.base_url
        prices = {"openai_prices": '{"": {"input": 0, "output": 0}}'} if provider == "openai" else {}
        with GatewayProcess(provider_env(provider, upstream, keys, **prices)) as gateway:
            settings = GeminiSettings(side_tasks=True, side_provider=provider, side_model=model)  # type: ignore[arg-type]
            redis = Redis.from_url(gateway.env["ASKBOX_REDIS_URL"])
            calls = GeminiCalls(settings, gateway.socket_dir, redis, SessionMeta(job_id="j1", user="U1"))
            reply = triage(calls, "hi there!", Conversation(turns=[], summary=""))
            summary = calls.text("summary", "Summarise.", "a long answer", 10)
    assert reply == "Hello! Ask me about the code." and summary == "A short summary."
    requests = fake.model_requests
    assert len(requests) == 2 and {r.model for r in requests} == {model} and fake.unknown == []
    assert {r.api_key for r in requests} == ({KEY} if keys else {None})  # keyless: no Authorization at all
    if provider == "openai":
        assert requests[0].path == "/v1/chat/completions"
        assert requests[0].body["response_format"]["json_schema"]["schema"] == Verdict.model_json_schema()
    else:
        assert "JSON schema" in requests[0].body["system"]
