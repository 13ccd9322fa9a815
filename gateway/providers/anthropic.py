"""The Anthropic Messages API as the gateway serves it to one question.

Route table (nothing else reaches upstream; the body's ``model`` must be the session's):

- ``POST /v1/messages``, query ``beta=true`` (as Claude Code sends it) or none (metered);
- ``POST /v1/messages/count_tokens``, likewise (not billed; still paced like any call).

The session token may come as ``x-api-key`` (``ANTHROPIC_API_KEY``) or ``Authorization:
Bearer`` (``ANTHROPIC_AUTH_TOKEN``) and is never forwarded; upstream gets the real key in
``x-api-key``. The body must be one of :mod:`anthropic_schema`'s allowlisted requests.
``anthropic-beta`` is forwarded as sent: a beta only makes new fields acceptable, and the
body allowlist, not the header, decides which fields reach upstream.

Usage: ``message_start`` carries the input side (input, cache-write and cache-read
tokens), each ``message_delta`` the output tokens so far (cumulative); a whole JSON
message has both in its ``usage``. A 429 says when to retry in ``retry-after``, else in
``anthropic-ratelimit-*-reset`` (an RFC 3339 time).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from pydantic import BaseModel, ValidationError

from gateway.errors import UpstreamError, retry_after
from gateway.providers import Call, Provider, Refused, explain, parse_json, serialise
from gateway.providers.anthropic_schema import CountTokensRequest, MessagesRequest
from gateway.usage import Usage, UsageTracker

KEY_HEADER = "x-api-key"
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta", "user-agent", "accept")
ROUTES: dict[str, tuple[str, type[BaseModel], bool]] = {  # path -> (action, schema, metered)
    "/v1/messages": ("messages", MessagesRequest, True),
    "/v1/messages/count_tokens": ("count_tokens", CountTokensRequest, False),
}
ALLOWED = (
    "a request may hold messages (text, base64 images and documents, tool calls and results, "
    "thinking), a system prompt, client tools (name, description, input schema) and generation "
    "settings; server-side tools (web_search, web_fetch, code_execution...), MCP servers, containers "
    "and url or file sources are refused."
)
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}


def read_usage(current: Usage | None, payload: dict[str, Any]) -> Usage | None:
    """The usage after one event (or a whole message)."""
    kind = payload.get("type")
    if kind == "message_start" and isinstance(payload.get("message"), dict):
        usage = payload["message"].get("usage")
    elif kind in ("message_delta", "message"):
        usage = payload.get("usage")
    else:
        return current
    if not isinstance(usage, dict):
        return current
    previous = current or Usage()

    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    prompt, cached = previous.prompt, previous.cached
    if "input_tokens" in usage:  # message_start, a whole message, or a delta repeating it
        cached = count("cache_read_input_tokens")
        prompt = count("input_tokens") + count("cache_creation_input_tokens") + cached
    output = count("output_tokens") if "output_tokens" in usage else previous.candidates
    return Usage(prompt=prompt, candidates=output, cached=cached, total=prompt + output)


def _reset_in(headers: Mapping[str, str]) -> float | None:
    """Seconds until the earliest ``anthropic-ratelimit-*-reset`` time."""
    found = []
    for name, value in headers.items():
        if name.lower().startswith("anthropic-ratelimit-") and name.lower().endswith("-reset"):
            try:
                when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            found.append((when - dt.datetime.now(dt.UTC)).total_seconds())
    return max(0.0, min(found)) if found else None


class AnthropicProvider(Provider):
    name = "anthropic"
    label = "the Anthropic API"
    title = "Anthropic"

    def client_token(self, request: web.Request) -> str | None:
        bearer = request.headers.get("authorization", "")
        return request.headers.get(KEY_HEADER) or (bearer[7:] if bearer.lower().startswith("bearer ") else None)

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
        action, schema, metered = route
        if not set(query) <= {("beta", "true")} or len(query) > 1:
            shown = "&".join(f"{k}={v}" for k, v in query)[:200]
            raise Refused(400, f"The askbox gateway allows beta=true on {action}; the query {shown} is refused.")
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
        data = serialise(parsed)
        output = request.max_tokens if isinstance(request, MessagesRequest) else 0
        return Call(
            action=action,
            model=model,
            path=raw_path,
            query=tuple(query),
            headers=tuple((k, headers[k]) for k in FORWARDED_HEADERS if k in headers)
            + (("content-type", "application/json"),),
            body=data,
            metered=metered,
            prompt_tokens=len(data),
            output_tokens=output,
        )

    def authorize(self, headers: CIMultiDict[str], secret: str) -> None:
        headers[KEY_HEADER] = secret

    def usage_tracker(self, content_type: str) -> UsageTracker:
        return UsageTracker(sse="text/event-stream" in content_type, read=read_usage)

    def upstream_error(self, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        delay = retry_after(headers)
        return UpstreamError(delay if delay is not None else _reset_in(headers), None)

    def error(self, status: int, message: str, *, retry_after: float | None = None) -> web.Response:
        extra = {"retry-after": str(max(1, round(retry_after)))} if retry_after is not None else {}
        body = {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}
        return web.json_response(body, status=status, headers=extra, dumps=json.dumps)
