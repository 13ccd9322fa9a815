"""A scriptable fake of the OpenAI API, as Codex CLI, the SDKs and OpenAI-compatible servers
(vLLM, Ollama, LiteLLM) speak it:

- ``POST /v1/responses`` (the Responses API; Codex's ``wire_api = "responses"``), streamed
  as the real typed events (``response.created``, ``response.output_item.added``,
  ``response.output_text.delta``, ``response.function_call_arguments.delta``,
  ``response.output_item.done``, ``response.completed`` with ``usage``), or whole;
- ``POST /v1/chat/completions`` (Chat Completions), streamed as ``data:`` chunks with
  ``delta.content`` / ``delta.tool_calls`` and, with ``stream_options.include_usage``,
  a last chunk carrying ``usage``, then ``data: [DONE]``; or whole;
- ``GET /v1/models`` (the model list clients probe).

The key is ``Authorization: Bearer``. Errors are ``{"error": {"message", "type", "param",
"code"}}``; a 429 carries ``retry-after`` and the ``x-ratelimit-*`` headers. ``prefix``
serves the same under another root (an OpenAI-compatible server at ``/openai/v1``).
See tests/fakes/AGENT_CLI_NOTES.md for what Codex sends.
"""

from __future__ import annotations

import json
import time
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

__all__ = ["ApiError", "FakeOpenAIAPI", "RecordedRequest", "Text", "ToolCall", "ToolCalls"]


class FakeOpenAIAPI(ScriptedAPI):
    name = "fake OpenAI API"

    def __init__(self, *args: Any, prefix: str = "/v1", models: tuple[str, ...] = ("gpt-5",), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prefix = prefix.rstrip("/")
        self.models = models

    @property
    def api_url(self) -> str:
        """The base URL clients take (``OPENAI_BASE_URL``, a provider's ``base_url``)."""
        return self.base_url + self.prefix

    def key_of(self, headers: dict[str, str], query: dict[str, list[str]]) -> str | None:
        bearer = headers.get("authorization", "")
        return bearer[7:] if bearer.lower().startswith("bearer ") else None

    def is_model_call(self, request: RecordedRequest) -> bool:
        return request.method == "POST" and request.path in (
            f"{self.prefix}/responses",
            f"{self.prefix}/chat/completions",
        )

    def other_route(self, handler: Handler, request: RecordedRequest) -> bool:
        if request.method == "GET" and request.path == f"{self.prefix}/models":
            request.status = 200
            handler.send_json(
                200,
                {
                    "object": "list",
                    "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models],
                },
            )
            return True
        return False

    # -- inspection ----------------------------------------------------------------

    def tool_outputs(self) -> list[str]:
        """What the client's tools returned: ``function_call_output`` items (Responses) and
        ``tool`` messages (Chat Completions) of every model call, in order, without repeats."""
        found: list[str] = []
        for request in self.model_requests:
            body = request.body if isinstance(request.body, dict) else {}
            items = body.get("input") if isinstance(body.get("input"), list) else body.get("messages") or []
            for item in items:
                if not isinstance(item, dict):
                    continue
                if item.get("type") in ("function_call_output", "custom_tool_call_output"):
                    output = item.get("output")
                    text = output if isinstance(output, str) else json.dumps(output)
                elif item.get("role") == "tool":
                    content = item.get("content")
                    text = content if isinstance(content, str) else json.dumps(content)
                else:
                    continue
                if text not in found:
                    found.append(text)
        return found

    # -- errors ----------------------------------------------------------------------

    def error_body(self, error: ApiError) -> JSON:
        return {"error": {"message": error.message, "type": error.kind, "param": None, "code": error.code}}

    def rate_limited(self, retry_after: str | None = "1") -> ApiError:
        headers = [
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", f"{retry_after or 1}s"),
        ]
        if retry_after is not None:
            headers.append(("retry-after", retry_after))
        return ApiError(
            429,
            "requests",
            "Rate limit reached for requests per min (RPM): Limit 500, Used 500.",
            tuple(headers),
            code="rate_limit_exceeded",
        )

    def overloaded(self) -> ApiError:
        return ApiError(503, "server_error", "The server is overloaded. Please try again later.")

    def auth_error(self) -> ApiError:
        return ApiError(401, "invalid_request_error", "Incorrect API key provided.", code="invalid_api_key")

    @staticmethod
    def not_found(model: str) -> ApiError:
        return ApiError(
            404,
            "invalid_request_error",
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )

    @staticmethod
    def context_overflow() -> ApiError:
        return ApiError(
            400,
            "invalid_request_error",
            "Your input exceeds the context window of this model. Please adjust your input and try again.",
            code="context_length_exceeded",
        )

    # -- answers -----------------------------------------------------------------------

    def answer(self, handler: Handler, request: RecordedRequest, turn: Text | ToolCall | ToolCalls) -> None:
        body: JSON = request.body if isinstance(request.body, dict) else {}
        if request.path.endswith("/chat/completions"):
            self._chat(handler, request, body, turn)
        else:
            self._responses(handler, request, body, turn)

    @staticmethod
    def _plan(turn: Text | ToolCall | ToolCalls) -> tuple[list[str], tuple[ToolCall, ...], float, bool]:
        """A turn as (text pieces, tool calls, delay between pieces, usage reported)."""
        if isinstance(turn, Text):
            return split(turn.text, turn.chunks), (), turn.delay, turn.usage
        calls, text = calls_of(turn)
        return ([text] if text else []), calls, 0.0, True

    def _responses(
        self, handler: Handler, request: RecordedRequest, body: JSON, turn: Text | ToolCall | ToolCalls
    ) -> None:
        pieces, calls, delay, usage_on = self._plan(turn)
        model = str(body.get("model") or "gpt")
        prompt = estimate_tokens(body.get("input"))
        output_tokens = sum(max(1, len(p) // 4) for p in pieces) + 10 * len(calls)
        usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + output_tokens,
        }
        request.usage = usage if usage_on else None
        response: JSON = {
            "id": next_id("resp_"),
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "model": model,
            "output": [],
            "usage": None,
        }
        items: list[JSON] = []
        events: list[tuple[float, str | None, Any]] = []
        seq = iter(range(1 << 30))

        def event(name: str, delay_s: float = 0.0, **data: Any) -> None:
            events.append((delay_s, name, {"type": name, "sequence_number": next(seq), **data}))

        event("response.created", response=response)
        event("response.in_progress", response=response)
        if pieces:
            item_id = next_id("msg_")
            index = len(items)
            event(
                "response.output_item.added",
                output_index=index,
                item={"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []},
            )
            event(
                "response.content_part.added",
                item_id=item_id,
                output_index=index,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
            )
            for i, piece in enumerate(pieces):
                event(
                    "response.output_text.delta",
                    delay if i else 0.0,
                    item_id=item_id,
                    output_index=index,
                    content_index=0,
                    delta=piece,
                )
            text = "".join(pieces)
            part = {"type": "output_text", "text": text, "annotations": []}
            event("response.output_text.done", item_id=item_id, output_index=index, content_index=0, text=text)
            event("response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=part)
            item = {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
            event("response.output_item.done", output_index=index, item=item)
            items.append(item)
        for call in calls:
            index = len(items)
            arguments = json.dumps(call.args)
            item = {
                "id": next_id("fc_"),
                "type": "function_call",
                "status": "in_progress",
                "call_id": call.id or next_id("call_"),
                "name": call.name,
                "arguments": "",
            }
            event("response.output_item.added", output_index=index, item=item)
            event("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=arguments)
            event("response.function_call_arguments.done", item_id=item["id"], output_index=index, arguments=arguments)
            done = {**item, "status": "completed", "arguments": arguments}
            event("response.output_item.done", output_index=index, item=done)
            items.append(done)
        final = {**response, "status": "completed", "output": items, "usage": usage if usage_on else None}
        if not body.get("stream"):
            handler.send_json(200, final)
            return
        event("response.completed", response=final)
        handler.send_sse(events)

    def _chat(self, handler: Handler, request: RecordedRequest, body: JSON, turn: Text | ToolCall | ToolCalls) -> None:
        pieces, calls, delay, usage_on = self._plan(turn)
        model = str(body.get("model") or "gpt")
        prompt = estimate_tokens(body.get("messages"))
        completion = sum(max(1, len(p) // 4) for p in pieces) + 10 * len(calls)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        request.usage = usage if usage_on else None
        chat_id, created = next_id("chatcmpl-"), int(time.time())
        tool_calls = [
            {
                "id": c.id or next_id("call_"),
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.args)},
            }
            for c in calls
        ]
        finish = "tool_calls" if calls else "stop"
        if not body.get("stream"):
            message: JSON = {"role": "assistant", "content": "".join(pieces) or None}
            if tool_calls:
                message["tool_calls"] = tool_calls
            whole: JSON = {
                "id": chat_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            }
            if usage_on:
                whole["usage"] = usage
            handler.send_json(200, whole)
            return

        def chunk(delta: JSON, finish_reason: str | None = None) -> JSON:
            return {
                "id": chat_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }

        events: list[tuple[float, str | None, Any]] = [(0.0, None, chunk({"role": "assistant", "content": ""}))]
        for i, piece in enumerate(pieces):
            events.append((delay if i else 0.0, None, chunk({"content": piece})))
        for i, call in enumerate(tool_calls):
            events.append((0.0, None, chunk({"tool_calls": [{"index": i, **call}]})))
        events.append((0.0, None, chunk({}, finish)))
        if usage_on and (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                (
                    0.0,
                    None,
                    {
                        "id": chat_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    },
                )
            )
        events.append((0.0, None, "[DONE]"))
        handler.send_sse(events)
