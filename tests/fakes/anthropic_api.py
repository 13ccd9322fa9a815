"""A scriptable fake of the Anthropic Messages API, as Claude Code and the SDKs call it.

- ``POST /v1/messages`` (``?beta=true`` as Claude Code sends it), streamed or not;
- ``POST /v1/messages/count_tokens`` (an estimate);

with the key in ``x-api-key`` (or ``Authorization: Bearer``, as an auth token). A stream
is the real event sequence, each as ``event: NAME`` + ``data: JSON``: ``message_start``
(usage: input and cache tokens), ``content_block_start`` / ``content_block_delta``
(``text_delta``, or ``input_json_delta`` for a ``tool_use`` block) / ``content_block_stop``,
``ping``, ``message_delta`` (``stop_reason``; usage: the output tokens so far), and
``message_stop``. Errors are ``{"type": "error", "error": {"type", "message"}}``; a 429
is a ``rate_limit_error`` with ``retry-after`` and ``anthropic-ratelimit-*`` headers.
See tests/fakes/AGENT_CLI_NOTES.md for what Claude Code sends.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.llm_api import (
    JSON,
    ApiError,
    Handler,
    RecordedRequest,
    ScriptedAPI,
    Text,
    ToolCall,
    ToolCalls,
    calls_of,
    estimate_tokens,
    next_id,
    split,
)

__all__ = ["ApiError", "FakeAnthropicAPI", "RecordedRequest", "Text", "ToolCall", "ToolCalls"]


class FakeAnthropicAPI(ScriptedAPI):
    name = "fake Anthropic API"

    def key_of(self, headers: dict[str, str], query: dict[str, list[str]]) -> str | None:
        bearer = headers.get("authorization", "")
        return headers.get("x-api-key") or (bearer[7:] if bearer.lower().startswith("bearer ") else None)

    def is_model_call(self, request: RecordedRequest) -> bool:
        return request.method == "POST" and request.path == "/v1/messages"

    def other_route(self, handler: Handler, request: RecordedRequest) -> bool:
        if request.method == "POST" and request.path == "/v1/messages/count_tokens":
            request.status = 200
            handler.send_json(200, {"input_tokens": estimate_tokens(request.body)})
            return True
        return False

    # -- inspection ----------------------------------------------------------------

    def tool_results(self) -> list[JSON]:
        """Every ``tool_result`` block of the last user message of each model call."""
        found = []
        for request in self.model_requests:
            messages = (request.body or {}).get("messages") or []
            last = messages[-1] if messages else {}
            content = last.get("content") if isinstance(last, dict) else None
            if last.get("role") == "user" and isinstance(content, list):
                found += [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        return found

    @staticmethod
    def result_text(block: JSON) -> str:
        content = block.get("content")
        if isinstance(content, str):
            return content
        return "".join(c.get("text", "") for c in content or [] if isinstance(c, dict))

    # -- errors ----------------------------------------------------------------------

    def error_body(self, error: ApiError) -> JSON:
        return {"type": "error", "error": {"type": error.kind, "message": error.message}, "request_id": next_id("req_")}

    def rate_limited(self, retry_after: str | None = "1") -> ApiError:
        headers = [("anthropic-ratelimit-requests-limit", "50"), ("anthropic-ratelimit-requests-remaining", "0")]
        if retry_after is not None:
            headers.append(("retry-after", retry_after))
        return ApiError(
            429,
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests per minute.",
            tuple(headers),
        )

    def overloaded(self) -> ApiError:
        return ApiError(529, "overloaded_error", "Overloaded")

    def auth_error(self) -> ApiError:
        return ApiError(401, "authentication_error", "invalid x-api-key")

    @staticmethod
    def not_found(model: str) -> ApiError:
        return ApiError(404, "not_found_error", f"model: {model}")

    @staticmethod
    def prompt_too_long() -> ApiError:
        return ApiError(400, "invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum")

    # -- answers -----------------------------------------------------------------------

    def answer(self, handler: Handler, request: RecordedRequest, turn: Text | ToolCall | ToolCalls) -> None:
        body: JSON = request.body if isinstance(request.body, dict) else {}
        model = str(body.get("model") or "claude")
        prompt = estimate_tokens(body.get("messages"))
        blocks: list[tuple[JSON, list[JSON], float]] = []  # (block start, deltas, delay before each)
        if isinstance(turn, Text):
            pieces = split(turn.text, turn.chunks)
            blocks.append(
                ({"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in pieces], turn.delay)
            )
            stop, output = "end_turn", sum(max(1, len(p) // 4) for p in pieces)
        else:
            calls, text = calls_of(turn)
            if text:
                blocks.append(({"type": "text", "text": ""}, [{"type": "text_delta", "text": text}], 0.0))
            for call in calls:
                arguments = json.dumps(call.args)
                half = len(arguments) // 2
                start = {"type": "tool_use", "id": call.id or next_id("toolu_"), "name": call.name, "input": {}}
                deltas = [
                    {"type": "input_json_delta", "partial_json": part}
                    for part in (arguments[:half], arguments[half:])
                    if part
                ]
                blocks.append((start, deltas, 0.0))
            stop, output = "tool_use", 10 * len(calls)
        usage_on = not isinstance(turn, Text) or turn.usage
        start_usage = {
            "input_tokens": prompt,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 1,
        }
        request.usage = {"input_tokens": prompt, "output_tokens": output} if usage_on else None
        message: JSON = {
            "id": next_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if usage_on:
            message["usage"] = start_usage
        if not body.get("stream"):
            content = []
            for start, deltas, _ in blocks:
                if start["type"] == "text":
                    content.append({"type": "text", "text": "".join(d["text"] for d in deltas)})
                else:
                    args = "".join(d["partial_json"] for d in deltas)
                    content.append({**start, "input": json.loads(args or "{}")})
            whole = {**message, "content": content, "stop_reason": stop}
            if usage_on:
                whole["usage"] = {**start_usage, "output_tokens": output}
            handler.send_json(200, whole)
            return
        events: list[tuple[float, str | None, Any]] = [
            (0.0, "message_start", {"type": "message_start", "message": message})
        ]
        for index, (start, deltas, delay) in enumerate(blocks):
            events.append(
                (0.0, "content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
            )
            if index == 0:
                events.append((0.0, "ping", {"type": "ping"}))
            for i, delta in enumerate(deltas):
                events.append(
                    (
                        delay if i else 0.0,
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
            events.append((0.0, "content_block_stop", {"type": "content_block_stop", "index": index}))
        message_delta: JSON = {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}}
        if usage_on:
            message_delta["usage"] = {"output_tokens": output}
        events.append((0.0, "message_delta", message_delta))
        events.append((0.0, "message_stop", {"type": "message_stop"}))
        handler.send_sse(events)
