"""Claude Code and Codex CLI answering questions end to end: a real `askbox worker` taking
the question off the real queue, the real CLI in the real sandbox (its image), the real
`askbox gateway` in front of its provider's fake (Anthropic Messages, OpenAI Responses),
real Redis.

Per agent: an answer with a tool step, an upstream 429 absorbed by the gateway, and the
key-exfiltration attempt (the agent told to print its environment, as a prompt-injected
agent would) leaving no real key in the answer, the logs or what reaches the provider; a
budget crossed mid-run ending the question with the budget's message; an unknown model
refused before any container starts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from jobs import queue as jobs_queue
from jobs.question import Origin, Question
from jobs.redaction import forms_of
from jobs.settings import JobSettings
from tests.fakes.anthropic_api import FakeAnthropicAPI
from tests.fakes.llm_api import RecordedRequest, ScriptedAPI, Text, ToolCall
from tests.fakes.openai_api import FakeOpenAIAPI
from tests.integration.gateway_helpers import GatewayProcess, provider_env
from tests.integration.pipeline_helpers import Workers, wait_final, worker_env

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.usefixtures("no_leftovers")]
REAL_KEY = "sk-REAL-organisation-key-0123456789abcdef"


@dataclass(frozen=True)
class Case:
    agent: str
    provider: str
    model: str
    key_variable: str
    shell_tool: str
    shell_args: str  # the shell tool's argument holding the command

    def fake(self) -> ScriptedAPI:
        return FakeAnthropicAPI() if self.provider == "anthropic" else FakeOpenAIAPI()

    def upstream(self, fake: ScriptedAPI) -> str:
        return fake.api_url if isinstance(fake, FakeOpenAIAPI) else fake.base_url

    def run(self, command: str) -> ToolCall:
        return ToolCall(self.shell_tool, {self.shell_args: command})

    @staticmethod
    def tool_output(fake: ScriptedAPI) -> str:
        if isinstance(fake, FakeAnthropicAPI):
            return "\n".join(fake.result_text(block) for block in fake.tool_results())
        assert isinstance(fake, FakeOpenAIAPI)
        return "\n".join(fake.tool_outputs())

    def billed(self, request: RecordedRequest) -> int:
        usage = request.usage or {}
        return usage["input_tokens"] + usage["output_tokens"]


CASES = [
    Case("claude", "anthropic", "claude-sonnet-4-5", "ANTHROPIC_API_KEY", "Bash", "command"),
    Case("codex", "openai", "gpt-5-codex", "OPENAI_API_KEY", "exec_command", "cmd"),
]


def ask(redis: Any, text: str, agent: str, model: str | None = None, user: str = "alice") -> str:
    origin = Origin(kind="terminal", user=user)
    question = Question(origin=origin, text=text, repo="demo", agent=agent, model=model)  # type: ignore[arg-type]
    return jobs_queue.enqueue(redis, question, JobSettings()).job.id


def contains_key(text: str) -> bool:
    return any(form in text for form in forms_of(REAL_KEY))


def workers(
    case: Case, redis_server: Any, repo: Any, egress_root: Any, gateway: GatewayProcess, tmp_path: Any, **extra: str
) -> Workers:
    # A careless operator gives the worker the real key too: it must still never reach a sandbox.
    env = worker_env(
        redis_server,
        repo,
        egress_root,
        ASKBOX_AGENT=case.agent,
        ASKBOX_RETRIES="0",
        ASKBOX_GATEWAY_SOCKET_DIR=str(gateway.socket_dir),
        **{case.key_variable: REAL_KEY},
        **extra,
    )
    pool = Workers(env)
    pool.start(1, log_dir=tmp_path)
    return pool


@pytest.mark.parametrize("case", CASES, ids=[c.agent for c in CASES])
def test_an_answer_with_a_tool_step_a_429_absorbed_and_no_key_to_print(
    case: Case, redis_server, redis, repo, egress_root, tmp_path, built_images
):
    fake = case.fake()

    def echo(request: RecordedRequest) -> Text:
        return Text("Here is the output: " + case.tool_output(fake), chunks=3)

    fake.script(fake.rate_limited("0"), case.run(f"env; printenv {case.key_variable} | base64"), echo)
    with fake, GatewayProcess(provider_env(case.provider, case.upstream(fake), [REAL_KEY], redis_server.url)) as gw:
        pool = workers(case, redis_server, repo, egress_root, gw, tmp_path)
        try:
            job_id = ask(redis, "run env and show me the output", case.agent)
            final = wait_final(redis, job_id, timeout=180, workers=pool)
        finally:
            pool.stop()
        calls = fake.model_requests
        logs = "".join(p.read_text(errors="replace") for p in pool.logs) + gw.output()
    assert final["kind"] == "answer", final
    assert final["text"].startswith("Here is the output:") and final["model"] == case.model, final
    tool_output = case.tool_output(fake)
    # The attempt really ran in the sandbox: its environment came back to the model...
    assert f"{case.key_variable}=" in tool_output and "HOME=" in tool_output, tool_output[:2000]
    token = re.search(rf"{case.key_variable}=(\S+)", tool_output).group(1)  # type: ignore[union-attr]
    assert token != REAL_KEY
    # ...and upstream saw the real key on every call (the 429 too), never the sandbox's token.
    assert len(calls) == 3 and calls[0].status == 429 and [c.status for c in calls[1:]] == [200, 200]
    assert {c.api_key for c in calls} == {REAL_KEY} and all(c.model == case.model for c in calls)
    for where, text in [("requests", json.dumps([c.body for c in calls])), ("answer", final["text"]), ("logs", logs)]:
        assert not contains_key(text), f"the real key reached the {where}"
    assert fake.unknown == [] and fake.errors == []
    # Every token counted: the job's usage is what the fake's usage fields said; the 429 absorbed.
    meta = jobs_queue.fetch(redis, job_id).get_meta(refresh=True)
    assert meta["usage"]["total_tokens"] == sum(case.billed(c) for c in calls[1:]) > 0
    assert meta["usage"]["absorbed_429"] == 1 and final["tokens"] == meta["usage"]["total_tokens"]


@pytest.mark.parametrize("case", CASES, ids=[c.agent for c in CASES])
def test_a_budget_crossed_mid_run_and_an_unknown_model_end_clearly(
    case: Case, redis_server, redis, repo, egress_root, tmp_path, built_images
):
    fake = case.fake()
    fake.script(case.run("ls"), Text("never sent: the budget is used up"))
    with (
        fake,
        GatewayProcess(
            provider_env(case.provider, case.upstream(fake), [REAL_KEY], redis_server.url, budget_question_tokens="300")
        ) as gw,
    ):
        pool = workers(case, redis_server, repo, egress_root, gw, tmp_path, ASKBOX_BUDGET_QUESTION_TOKENS="300")
        try:
            crossed = wait_final(redis, ask(redis, "What is in here?", case.agent), timeout=180, workers=pool)
            first = len(fake.requests)
            unknown = wait_final(
                redis, ask(redis, "And now?", case.agent, model="no-such-model", user="bob"), timeout=60, workers=pool
            )
        finally:
            pool.stop()
    # The first answer (a tool call) used more than the question's 300 tokens: the agent's
    # next request was refused at the gateway, and the question ended with the budget's words.
    assert crossed["kind"] == "rejected", crossed
    assert "budget is used up" in crossed["text"] and "/300 tokens" in crossed["text"], crossed["text"]
    assert first == 1 and fake.model_requests[0].status == 200
    # An unknown model never starts a container: the worker refuses it, naming the allowed ones.
    assert unknown["kind"] == "rejected" and "not available for " + case.agent in unknown["text"], unknown
    assert case.model in unknown["text"] and len(fake.requests) == first
