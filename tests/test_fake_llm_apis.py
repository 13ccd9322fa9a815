"""The fake Anthropic and OpenAI APIs against the REAL clients: Claude Code and Codex CLI,
pinned as in images/ and .ci/run, run on the host the way the images configure them
(tests/fixtures/record_agent_streams.py). If these pass, tests built on the fakes exercise
the same wire protocol as production: the CLI reads the fake's stream (text, a tool call,
usage), runs its tool and sends the result back, and calls nothing the fake does not serve.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.fakes.anthropic_api import FakeAnthropicAPI
from tests.fakes.openai_api import FakeOpenAIAPI
from tests.fixtures.record_agent_streams import KEY, run


@pytest.mark.parametrize("agent", ["claude", "codex"])
def test_the_real_cli_answers_from_the_fake_with_its_tools(agent: str, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        unavailable("root (the CLI runs as nobody through setpriv)", f"uid {os.geteuid()}")
    if not shutil.which(agent):
        unavailable(f"the {agent} CLI on the host", ".ci/run installs it")
    fake = run(agent, "tools", tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "tools.jsonl").read_text().splitlines() if line.strip()]
    assert fake.unknown == [] and fake.errors == []
    assert len(fake.model_requests) == 4 and {r.api_key for r in fake.model_requests} == {KEY}
    assert all(r.status == 200 for r in fake.model_requests)
    # The tool really ran: its output went back to the fake in the next request.
    if isinstance(fake, FakeAnthropicAPI):
        results = [fake.result_text(b) for b in fake.tool_results()]
        assert "A demo repository." in results[0] and 'print("hello")' in results[1]
        assert lines[-1]["type"] == "result" and lines[-1]["is_error"] is False
        assert all(r.path == "/v1/messages" and r.query == {"beta": ["true"]} for r in fake.model_requests)
    else:
        assert isinstance(fake, FakeOpenAIAPI)
        outputs = fake.tool_outputs()
        assert "A demo repository." in outputs[0] and 'print("hello")' in outputs[1]
        assert lines[-1]["type"] == "turn.completed" and lines[-1]["usage"]["input_tokens"] > 0
        assert all(r.path == "/v1/responses" for r in fake.model_requests)
        assert {t.get("type") for r in fake.model_requests for t in r.body["tools"]} == {"function"}
