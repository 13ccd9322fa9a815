"""Gemini's route table and request allowlist (gateway/providers/gemini.py), and what
a response is charged: what the Gemini CLI and google-genai send passes unchanged in
meaning; every other path, model, field and spelling is refused with a message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.metering import Charge, estimate_cost, price_for
from gateway.providers import Refused
from gateway.providers.gemini import FORWARDED_HEADERS, GeminiProvider
from gateway.reservations import Reservation
from gateway.settings import DEFAULT_PRICES
from gateway.usage import Usage

MODEL = "gemini-2.5-flash"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent"
PROVIDER = GeminiProvider(default_output_tokens=1000)

# What the Gemini CLI 0.61 sends (tests/fakes/GEMINI_CLI_NOTES.md), a tool round trip in.
CLI_BODY: dict[str, Any] = {
    "contents": [
        {"role": "user", "parts": [{"text": "<session_context>...</session_context>"}, {"text": "What is this?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "thinking", "thought": True},
                {"functionCall": {"name": "read_file", "args": {"file_path": "a.png"}}, "thoughtSignature": "c2ln"},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"id": "read_file_1_0", "name": "read_file", "response": {"output": "binary"}}},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            ],
        },
    ],
    "systemInstruction": {"role": "user", "parts": [{"text": "You are an agent."}]},
    "tools": [
        {
            "functionDeclarations": [
                {"name": "read_file", "description": "Reads a file", "parametersJsonSchema": {"type": "object"}}
            ]
        }
    ],
    "generationConfig": {
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 8192},
    },
}
# What google-genai sends for a side task with a response schema (snake_case is its input,
# the wire has camelCase; both are accepted, as the API accepts both).
GENAI_BODY: dict[str, Any] = {
    "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
    "systemInstruction": {"parts": [{"text": "triage"}], "role": "user"},
    "generationConfig": {
        "temperature": 0.0,
        "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "properties": {"needs_code": {"type": "BOOLEAN"}}},
    },
}


def admit(
    body: Any,
    path: str = STREAM,
    *,
    query: list[tuple[str, str]] | None = None,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
):
    data = raw if raw is not None else json.dumps(body).encode()
    return PROVIDER.admit(method, path, [("alt", "sse")] if query is None else query, headers or {}, data, MODEL)


def refusal(body: Any, **kwargs: Any) -> Refused:
    with pytest.raises(Refused) as raised:
        admit(body, **kwargs)
    return raised.value


def test_what_the_clients_send_goes_through_as_checked():
    call = admit(
        CLI_BODY,
        headers={
            "user-agent": "GeminiCLI/0.61.0",
            "x-goog-api-client": "google-genai-sdk/1.30.0",
            "x-gemini-api-privileged-user-id": "uuid",
            "x-http-method-override": "GET",
            "x-goog-user-project": "someone-else",
            "x-goog-api-key": "the-token",
        },
    )
    assert json.loads(call.body) == CLI_BODY
    assert call.path == STREAM and call.query == (("alt", "sse"),) and call.metered
    assert dict(call.headers) == {
        "user-agent": "GeminiCLI/0.61.0",
        "x-goog-api-client": "google-genai-sdk/1.30.0",
        "content-type": "application/json",
    }
    assert {k for k, _ in call.headers} <= {*FORWARDED_HEADERS, "content-type"}
    assert call.prompt_tokens == len(call.body) and call.output_tokens == 1000
    genai = admit(GENAI_BODY, f"/v1/models/{MODEL}:generateContent", query=[("key", "the-token")])
    assert genai.path == f"/v1/models/{MODEL}:generateContent" and genai.query == ()  # the token never goes on
    capped = admit({**GENAI_BODY, "generationConfig": {"maxOutputTokens": 50, "candidateCount": 2}})
    assert capped.output_tokens == 100
    count = admit({"contents": CLI_BODY["contents"]}, f"/v1beta/models/{MODEL}:countTokens", query=[])
    assert not count.metered and count.output_tokens == 0
    snake = {
        "contents": [{"parts": [{"text": "x"}]}],
        "system_instruction": {"parts": [{"text": "y"}]},
        "tools": [{"function_declarations": [{"name": "f"}]}],
        "generation_config": {"max_output_tokens": 7},
    }
    assert admit(snake).output_tokens == 7


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1beta/files"),
        ("POST", "/upload/v1beta/files"),
        ("POST", "/v1beta/cachedContents"),
        ("GET", "/v1beta/tunedModels"),
        ("POST", f"/v1beta/models/{MODEL}:batchGenerateContent"),
        ("POST", f"/v1beta/models/{MODEL}:predict"),
        ("GET", "/v1beta/models"),
        ("GET", f"/v1beta/models/{MODEL}"),
        ("GET", STREAM),
        ("DELETE", STREAM),
        ("POST", f"/v1alpha/models/{MODEL}:generateContent"),
        ("POST", f"/v1beta/models/{MODEL}:generateContent/../../files"),
        ("POST", f"/v1beta/models/{MODEL}%3AgenerateContent"),
        ("POST", f"/v1beta/models/{MODEL}:generateContent/"),
        ("POST", f"/v1beta/tunedModels/{MODEL}:generateContent"),
    ],
)
def test_paths_outside_the_route_table_are_refused(method: str, path: str):
    refused = refusal(GENAI_BODY, path=path, method=method, query=[])
    assert refused.status == 403 and "serves only POST /v1beta/models/gemini-2.5-flash" in str(refused)


@pytest.mark.parametrize(
    "model",
    [
        "gemini-2.5-pro",
        "gemini-2.5-flash-image-preview",
        "imagen-4.0-generate-001",
        "veo-3.0-generate-001",
        "gemini-2.5-flash-preview-tts",
        "gemini-2.5-flash-lite",
    ],
)
def test_only_the_sessions_model(model: str):
    refused = refusal(GENAI_BODY, path=f"/v1beta/models/{model}:generateContent", query=[])
    assert refused.status == 403 and "only the model gemini-2.5-flash" in str(refused)
    nested = {"generateContentRequest": {"model": f"models/{model}", **GENAI_BODY}}
    refused = refusal(nested, path=f"/v1beta/models/{MODEL}:countTokens", query=[])
    assert refused.status == 403 and "only the model" in str(refused)
    ok = {"generateContentRequest": {"model": f"models/{MODEL}", **GENAI_BODY}}
    assert admit(ok, path=f"/v1beta/models/{MODEL}:countTokens", query=[]).action == "countTokens"


@pytest.mark.parametrize(
    "query", [[("alt", "media")], [("$fields", "x")], [("alt", "sse"), ("alt", "sse")], [("prettyPrint", "false")]]
)
def test_only_alt_sse_on_streams(query: list[tuple[str, str]]):
    assert refusal(GENAI_BODY, query=query).status == 400
    assert refusal(GENAI_BODY, path=f"/v1beta/models/{MODEL}:generateContent", query=[("alt", "sse")]).status == 400


def with_contents(**extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], **extra}


def part(**fields: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [fields]}]}


@pytest.mark.parametrize(
    "body, where",
    [
        (with_contents(tools=[{"googleSearch": {}}]), "tools[0].googleSearch"),
        (with_contents(tools=[{"google_search": {}}]), "tools[0].google_search"),
        (with_contents(tools=[{"urlContext": {}}]), "tools[0].urlContext"),
        (with_contents(tools=[{"url_context": {}}]), "tools[0].url_context"),
        (with_contents(tools=[{"codeExecution": {}}]), "tools[0].codeExecution"),
        (with_contents(tools=[{"code_execution": {}}]), "tools[0].code_execution"),
        (with_contents(tools=[{"googleSearchRetrieval": {}}]), "tools[0].googleSearchRetrieval"),
        (with_contents(tools=[{"functionDeclarations": [{"name": "f"}], "googleSearch": {}}]), "tools[0].googleSearch"),
        (with_contents(tools=[{"fileSearch": {"fileSearchStoreNames": ["x"]}}]), "tools[0].fileSearch"),
        (with_contents(tools=[{"mcpServers": [{"name": "x"}]}]), "tools[0].mcpServers"),
        (with_contents(toolConfig={"retrievalConfig": {}}), "toolConfig.retrievalConfig"),
        (with_contents(cachedContent="cachedContents/abc"), "cachedContent"),
        (with_contents(cached_content="cachedContents/abc"), "cached_content"),
        (with_contents(serviceTier="priority"), "serviceTier"),
        (with_contents(store=True), "store"),
        (with_contents(labels={"a": "b"}), "labels"),
        (
            part(fileData={"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/x"}),
            "contents[0].parts[0].fileData",
        ),
        (part(file_data={"file_uri": "gs://bucket/x"}), "contents[0].parts[0].file_data"),
        (part(executableCode={"code": "print(1)"}), "contents[0].parts[0].executableCode"),
        (part(codeExecutionResult={"output": "1"}), "contents[0].parts[0].codeExecutionResult"),
        (part(videoMetadata={}), "contents[0].parts[0].videoMetadata"),
        (
            part(functionResponse={"name": "f", "parts": [{"fileData": {"fileUri": "files/x"}}]}),
            "contents[0].parts[0].functionResponse.parts[0].fileData",
        ),
        (
            part(inlineData={"mimeType": "image/png", "data": "x", "fileUri": "files/x"}),
            "contents[0].parts[0].inlineData.fileUri",
        ),
        (part(text="x", somethingNew={}), "contents[0].parts[0].somethingNew"),
        (with_contents(generationConfig={"speechConfig": {}}), "generationConfig.speechConfig"),
        (with_contents(generationConfig={"imageConfig": {}}), "generationConfig.imageConfig"),
        (
            with_contents(systemInstruction={"parts": [{"fileData": {"fileUri": "files/x"}}]}),
            "systemInstruction.parts[0].fileData",
        ),
    ],
)
def test_forbidden_fields_are_refused_and_named(body: dict[str, Any], where: str):
    refused = refusal(body)
    assert refused.status == 400 and f"does not forward `{where}`" in str(refused), str(refused)


def test_ambiguous_and_malformed_bodies_are_refused():
    both = with_contents(systemInstruction={"parts": [{"text": "a"}]}, system_instruction={"parts": [{"text": "b"}]})
    assert "same field" in str(refusal(both))
    # Python would keep the harmless last value; another parser may keep the first.
    dup = b'{"contents":[{"parts":[{"text":"x"}]}],"tools":[{"googleSearch":{}}],"tools":[{"functionDeclarations":[]}]}'
    assert "`tools` twice" in str(refusal(None, raw=dup))
    assert refusal(with_contents(generationConfig={"responseModalities": ["IMAGE"]})).status == 400
    assert refusal(with_contents(generationConfig={"candidateCount": 100})).status == 400
    assert "not JSON" in str(refusal(None, raw=b"not json"))
    assert "not JSON" in str(refusal(None, raw=b"\xff\xfe"))
    assert "not valid JSON" in str(refusal(None, raw=b'{"contents": [], "generationConfig": {"temperature": NaN}}'))
    assert refusal({"no": "contents"}).status == 400
    assert refusal([CLI_BODY]).status == 400


def test_unknown_models_pay_the_most_expensive_price():
    assert price_for(DEFAULT_PRICES, "gemini-3-ultra") == {"input": 1.25, "output": 10.0}
    assert price_for(DEFAULT_PRICES, "claude-x") == {"input": 1.25, "output": 10.0}
    assert estimate_cost(DEFAULT_PRICES, "some-new-model", Usage(prompt=1_000_000)) == pytest.approx(1.25)


def test_what_a_response_is_charged():
    reservation = Reservation("r", tokens=500, usd=0.5, date="2026-01-01", budgets=())
    usage = Usage(prompt=10, candidates=5, total=15)
    whole = Charge.settle(DEFAULT_PRICES, MODEL, reservation, usage, whole=True)
    assert (whole.tokens, whole.estimated) == (15, False) and whole.usd == estimate_cost(DEFAULT_PRICES, MODEL, usage)
    cut = Charge.settle(DEFAULT_PRICES, MODEL, reservation, usage, whole=False)
    assert (cut.tokens, cut.usd, cut.estimated) == (500, 0.5, True)
    silent = Charge.settle(DEFAULT_PRICES, MODEL, reservation, None, whole=True)
    assert (silent.tokens, silent.usd, silent.estimated) == (500, 0.5, True)
    big = Usage(prompt=900, candidates=100, total=1000)
    assert Charge.settle(DEFAULT_PRICES, MODEL, reservation, big, whole=False).tokens == 1000  # more than reserved
