"""The Gemini API (generativelanguage) as the gateway serves it to one question.

Route table (nothing else reaches upstream; ``{model}`` is the session's model, no other):

- ``POST /{v1beta|v1}/models/{model}:streamGenerateContent``, query ``alt=sse`` or none (metered);
- ``POST /{v1beta|v1}/models/{model}:generateContent`` (metered);
- ``POST /{v1beta|v1}/models/{model}:countTokens`` (not billed; still paced like any call).

(The Gemini CLI calls v1beta; google-genai defaults to v1 when given a base URL.) The
session token may come as ``x-goog-api-key`` or ``?key=``, as the API accepts a key, and
is never forwarded. The body must be one of :mod:`gemini_schema`'s allowlisted requests;
it goes upstream re-serialised from what was checked, with only the request headers in
``FORWARDED_HEADERS`` and the real key in ``x-goog-api-key``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict
from pydantic import BaseModel, ValidationError

from gateway.errors import UpstreamError, error_response, retry_after
from gateway.providers import Call, Provider, Refused, explain, parse_json, serialise
from gateway.providers.gemini_schema import CountTokensRequest, GenerateContentRequest
from gateway.usage import UsageTracker

KEY_HEADER = "x-goog-api-key"
# What the clients send that upstream may use: content negotiation and the SDK's
# identification. Everything else (method overrides, x-goog-user-project, referer,
# x-server-timeout, the CLI's x-gemini-api-privileged-user-id...) is dropped.
FORWARDED_HEADERS = ("user-agent", "x-goog-api-client", "accept")
VERSIONS = ("v1beta", "v1")
_PATH = re.compile(r"/(?P<version>v1beta|v1)/models/(?P<model>[A-Za-z0-9._-]+):(?P<action>[A-Za-z]+)")


@dataclass(frozen=True)
class Route:
    action: str
    schema: type[BaseModel]
    metered: bool  # billed by the API: reserved before, settled after
    query: tuple[tuple[str, str], ...] = ()  # allowed (name, value) pairs besides the token


ROUTES = {
    route.action: route
    for route in (
        Route("streamGenerateContent", GenerateContentRequest, metered=True, query=(("alt", "sse"),)),
        Route("generateContent", GenerateContentRequest, metered=True),
        Route("countTokens", CountTokensRequest, metered=False),
    )
}


ALLOWED = (
    "a request may hold contents (text, inline data, function calls and responses), a system "
    "instruction, function declarations and generation settings; server-side tools (googleSearch, "
    "urlContext, codeExecution...), cached content and file references are refused."
)


class GeminiProvider(Provider):
    name = "gemini"
    label = "the Gemini API"
    title = "Gemini"

    def client_token(self, request: web.Request) -> str | None:
        return request.headers.get(KEY_HEADER) or request.query.get("key")

    def admit(
        self,
        method: str,
        raw_path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes,
        model: str,
    ) -> Call:
        match = _PATH.fullmatch(raw_path)
        route = ROUTES.get(match["action"]) if match else None
        if method != "POST" or match is None or route is None:
            raise Refused(
                403,
                f"The askbox gateway serves only POST /v1beta/models/{model}:"
                f"{{{','.join(ROUTES)}}} for this question; {method} {raw_path[:200]} is refused.",
            )
        if match["model"] != model:
            raise Refused(
                403, f"This question may use only the model {model}; the askbox gateway refuses {match['model'][:100]}."
            )
        forwarded = tuple((k, v) for k, v in query if k != "key")
        if len(set(forwarded)) != len(forwarded) or not set(forwarded) <= set(route.query):
            allowed = "&".join(f"{k}={v}" for k, v in route.query) or "no parameters"
            raise Refused(
                400,
                f"The askbox gateway allows {allowed} on {route.action}; the query "
                f"{'&'.join(f'{k}={v}' for k, v in forwarded)[:200]} is refused.",
            )
        parsed = parse_json(body)
        try:
            request = route.schema.model_validate(parsed)
        except ValidationError as exc:
            raise Refused(400, explain(exc, ALLOWED)) from None
        if isinstance(request, CountTokensRequest) and request.generate_content_request is not None:
            named = request.generate_content_request.model
            if named != f"models/{model}":
                raise Refused(
                    403, f"This question may use only the model {model}; the askbox gateway refuses {named[:100]}."
                )
        data = serialise(parsed)
        return Call(
            action=route.action,
            model=model,
            path=f"/{match['version']}/models/{model}:{route.action}",
            query=forwarded,
            headers=tuple((k, headers[k]) for k in FORWARDED_HEADERS if k in headers)
            + (("content-type", "application/json"),),
            body=data,
            metered=route.metered,
            # An upper bound for text: every token the tokenizer makes covers at least one
            # byte, and the JSON around the text only adds bytes.
            prompt_tokens=len(data),
            output_tokens=self._output_cap(request),
        )

    def _output_cap(self, request: BaseModel) -> int:
        if not isinstance(request, GenerateContentRequest):
            return 0
        config = request.generation_config
        cap = (config.max_output_tokens if config else None) or self.default_output_tokens
        return cap * ((config.candidate_count if config else None) or 1)

    def authorize(self, headers: CIMultiDict[str], secret: str) -> None:
        headers[KEY_HEADER] = secret

    def usage_tracker(self, content_type: str) -> UsageTracker:
        return UsageTracker(sse="text/event-stream" in content_type)

    def upstream_error(self, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        error = UpstreamError.parse(body)
        if error.retry_delay is None and (delay := retry_after(headers)) is not None:
            return UpstreamError(delay, error.per_day_quota)
        return error

    def error(self, status: int, message: str, *, retry_after: float | None = None) -> web.Response:
        return error_response(status, message, retry_after=retry_after)
