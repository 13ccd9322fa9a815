"""The OpenAI API, or an OpenAI-compatible server, as the gateway serves it to one question.

Route table (nothing else reaches upstream; the body's ``model`` must be the session's):

- ``POST /v1/responses`` (the Responses API: Codex CLI) (metered);
- ``POST /v1/chat/completions`` (Chat Completions: side tasks, most self-hosted servers) (metered).

Upstream is ``ASKBOX_OPENAI_BASE_URL`` (with its ``/v1``): OpenAI itself, or the
operator's own vLLM / Ollama / LiteLLM server, so ``/v1/responses`` goes to
``<base>/responses``. The session token comes as ``Authorization: Bearer`` and is never
forwarded; upstream gets the real key there, or no ``Authorization`` at all for a
self-hosted server configured without a key. The body must be one of
:mod:`openai_schema`'s allowlisted requests.

Usage: the ``usage`` of a whole response, of the Responses stream's final
``response.completed`` (``input_tokens`` / ``output_tokens``, reasoning tokens among the
output), or of the last Chat Completions chunk (``prompt_tokens`` / ``completion_tokens``,
sent when the client asks with ``stream_options.include_usage``). A 429 says when to retry
in ``retry-after`` / ``retry-after-ms``, else in ``x-ratelimit-reset-requests`` ("1s",
"6m0s").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from pydantic import BaseModel, ValidationError

from gateway.errors import UpstreamError, retry_after
from gateway.providers import Call, Provider, Refused, explain, parse_json, serialise
from gateway.providers.openai_schema import ChatRequest, ResponsesRequest
from gateway.usage import Usage, UsageTracker

FORWARDED_HEADERS = ("user-agent", "accept")
ROUTES: dict[str, tuple[str, str, type[BaseModel]]] = {  # client path -> (action, upstream path, schema)
    "/v1/responses": ("responses", "/responses", ResponsesRequest),
    "/v1/chat/completions": ("chat_completions", "/chat/completions", ChatRequest),
}
ALLOWED = (
    "a request may hold input items or messages (text, data: images, function calls and their "
    "outputs, reasoning), function tools and generation settings; server-side tools (web_search, "
    "file_search, code_interpreter, image_generation, mcp...), stored responses and prompts, "
    "store=true and url or file references are refused."
)
_DURATION = re.compile(r"(?P<value>[0-9]*\.?[0-9]+)(?P<unit>ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
    502: "server_error",
    503: "server_error",
}


def _count(data: dict[str, Any], *names: str) -> int:
    for name in names:
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def read_usage(current: Usage | None, payload: dict[str, Any]) -> Usage | None:
    """The usage a payload reports: a whole response's or chunk's ``usage``, or the
    Responses stream's final ``response``'s."""
    usage = payload.get("usage")
    if not isinstance(usage, dict) and isinstance(payload.get("response"), dict):
        usage = payload["response"].get("usage")
    if not isinstance(usage, dict):
        return current
    prompt = _count(usage, "input_tokens", "prompt_tokens")
    output = _count(usage, "output_tokens", "completion_tokens")
    details = usage.get("output_tokens_details") or usage.get("completion_tokens_details") or {}
    reasoning = min(output, _count(details, "reasoning_tokens")) if isinstance(details, dict) else 0
    cached_in = usage.get("input_tokens_details") or usage.get("prompt_tokens_details") or {}
    cached = _count(cached_in, "cached_tokens") if isinstance(cached_in, dict) else 0
    total = _count(usage, "total_tokens") or prompt + output
    return Usage(prompt=prompt, candidates=output - reasoning, thoughts=reasoning, cached=cached, total=total)


def duration(text: str) -> float | None:
    """OpenAI's reset durations ("1s", "6m0s", "20ms") in seconds."""
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(v + u for v, u in parts) != text.strip():
        return None
    return sum(float(value) * _UNITS[unit] for value, unit in parts)


class OpenAIProvider(Provider):
    name = "openai"
    label = "the OpenAI API"
    title = "OpenAI"

    def client_token(self, request: web.Request) -> str | None:
        bearer = request.headers.get("authorization", "")
        return bearer[7:] if bearer.lower().startswith("bearer ") else None

    def admit(
        self,
        method: str,
        raw_path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes,
        model: str,
    ) -> Call:
        route = ROUTES.get(raw_path)
        if method != "POST" or route is None:
            raise Refused(
                403,
                f"The askbox gateway serves only POST {{{','.join(ROUTES)}}} for this question; "
                f"{method} {raw_path[:200]} is refused.",
            )
        action, upstream_path, schema = route
        if query:
            shown = "&".join(f"{k}={v}" for k, v in query)[:200]
            raise Refused(400, f"The askbox gateway allows no query on {action}; {shown} is refused.")
        parsed = parse_json(body)
        try:
            request = schema.model_validate(parsed)
        except ValidationError as exc:
            raise Refused(400, explain(exc, ALLOWED)) from None
        named = getattr(request, "model", "")
        if named != model:
            raise Refused(
                403, f"This question may use only the model {model}; the askbox gateway refuses {str(named)[:100]}."
            )
        if (
            isinstance(request, ChatRequest)
            and request.stream
            and not (request.stream_options and request.stream_options.include_usage)
        ):
            # Without it the stream reports no usage: ask for it, so every token is metered.
            parsed["stream_options"] = {**(parsed.get("stream_options") or {}), "include_usage": True}
        data = serialise(parsed)
        return Call(
            action=action,
            model=model,
            path=upstream_path,
            query=(),
            headers=tuple((k, headers[k]) for k in FORWARDED_HEADERS if k in headers)
            + (("content-type", "application/json"),),
            body=data,
            metered=True,
            prompt_tokens=len(data),
            output_tokens=self._output_cap(request),
        )

    def _output_cap(self, request: BaseModel) -> int:
        if isinstance(request, ResponsesRequest):
            return request.max_output_tokens or self.default_output_tokens
        assert isinstance(request, ChatRequest)
        cap = request.max_completion_tokens or request.max_tokens or self.default_output_tokens
        return cap * (request.n or 1)

    def authorize(self, headers: CIMultiDict[str], secret: str) -> None:
        if secret:  # a self-hosted server configured without keys gets none
            headers["authorization"] = f"Bearer {secret}"

    def usage_tracker(self, content_type: str) -> UsageTracker:
        return UsageTracker(sse="text/event-stream" in content_type, read=read_usage)

    def upstream_error(self, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        delay = retry_after(headers)
        if delay is None:
            resets = [
                duration(headers[name])
                for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
                if name in headers
            ]
            known = [r for r in resets if r is not None]
            delay = max(known) if known else None
        return UpstreamError(delay, None)

    def error(self, status: int, message: str, *, retry_after: float | None = None) -> web.Response:
        extra = {"retry-after": str(max(1, round(retry_after)))} if retry_after is not None else {}
        body = {
            "error": {"message": message, "type": _ERROR_TYPES.get(status, "server_error"), "param": None, "code": None}
        }
        return web.json_response(body, status=status, headers=extra)
