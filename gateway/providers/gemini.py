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

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from pydantic import BaseModel, ValidationError

from gateway.errors import UpstreamError, error_response
from gateway.providers import Call, Provider, Refused
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


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one key: Python keeps the last, another parser may keep the first.
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise Refused(400, f"The request body gives `{key}` twice; the askbox gateway forwards only "
                               "unambiguous JSON.")
        seen[key] = value
    return seen


def _where(loc: tuple[int | str, ...]) -> str:
    path = ""
    for item in loc:
        path += f"[{item}]" if isinstance(item, int) else (f".{item}" if path else str(item))
    return path or "the body"


def _explain(exc: ValidationError) -> str:
    # A forbidden field says more than the required one missing beside it.
    error = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    where = _where(error["loc"])
    if error["type"] == "extra_forbidden":
        return (f"The askbox gateway does not forward `{where}`: a request may hold contents (text, inline "
                "data, function calls and responses), a system instruction, function declarations and "
                "generation settings; server-side tools (googleSearch, urlContext, codeExecution...), "
                "cached content and file references are refused.")
    return f"The askbox gateway refused the request body at `{where}`: {error['msg']}."


class GeminiProvider(Provider):
    name = "gemini"

    def __init__(self, default_output_tokens: int) -> None:
        # The answer's cap when a request sets no maxOutputTokens (for its reservation).
        self.default_output_tokens = default_output_tokens

    def client_token(self, request: web.Request) -> str | None:
        return request.headers.get(KEY_HEADER) or request.query.get("key")

    def admit(self, method: str, raw_path: str, query: list[tuple[str, str]], headers: Mapping[str, str],
              body: bytes, model: str) -> Call:
        match = _PATH.fullmatch(raw_path)
        route = ROUTES.get(match["action"]) if match else None
        if method != "POST" or match is None or route is None:
            raise Refused(403, f"The askbox gateway serves only POST /v1beta/models/{model}:"
                               f"{{{','.join(ROUTES)}}} for this question; {method} {raw_path[:200]} is refused.")
        if match["model"] != model:
            raise Refused(403, f"This question may use only the model {model}; the askbox gateway refuses "
                               f"{match['model'][:100]}.")
        forwarded = tuple((k, v) for k, v in query if k != "key")
        if len(set(forwarded)) != len(forwarded) or not set(forwarded) <= set(route.query):
            allowed = "&".join(f"{k}={v}" for k, v in route.query) or "no parameters"
            raise Refused(400, f"The askbox gateway allows {allowed} on {route.action}; the query "
                               f"{'&'.join(f'{k}={v}' for k, v in forwarded)[:200]} is refused.")
        try:
            parsed = json.loads(body, object_pairs_hook=_reject_duplicates)
        except (ValueError, UnicodeDecodeError):
            raise Refused(400, "The request body is not JSON (the askbox gateway forwards only JSON bodies).") from None
        try:
            request = route.schema.model_validate(parsed)
        except ValidationError as exc:
            raise Refused(400, _explain(exc)) from None
        if isinstance(request, CountTokensRequest) and request.generate_content_request is not None:
            named = request.generate_content_request.model
            if named != f"models/{model}":
                raise Refused(403, f"This question may use only the model {model}; the askbox gateway refuses "
                                   f"{named[:100]}.")
        try:
            # Upstream gets exactly what was checked, never the client's bytes (whose
            # parsing could differ from Python's).
            data = json.dumps(parsed, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        except (ValueError, UnicodeEncodeError):
            raise Refused(400, "The request body holds a number or a string that is not valid JSON.") from None
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

    def upstream_error(self, body: bytes) -> UpstreamError:
        return UpstreamError.parse(body)

    def error(self, status: int, message: str, *, retry_after: float | None = None) -> web.Response:
        return error_response(status, message, retry_after=retry_after)
