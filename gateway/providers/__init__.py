"""What the gateway needs to know about one LLM provider, and nothing else.

A provider is the single owner of everything that depends on its wire protocol:

- its **route table**: which method, path and query a session may call, with the
  session's model bound into the path; anything else is refused before it leaves;
- its **request validator**: the body parsed and checked against an allowlist (no
  server-side tools, no cached or uploaded content), then re-serialised, so upstream
  receives exactly what was checked;
- its **token swap**: where a client puts the session token, which header carries the real
  key upstream, and the request headers worth forwarding;
- its **meter**: how a response reports usage, and what a refusal or an upstream error
  looks like on the wire.

The gateway (server.py, upstream.py) asks the provider and knows no path, field or
header name itself. The providers: :mod:`gateway.providers.gemini` (the Gemini API),
:mod:`gateway.providers.anthropic` (the Messages API), :mod:`gateway.providers.openai`
(the Responses and Chat Completions APIs, of OpenAI or of an OpenAI-compatible server);
a session names its provider (``SessionMeta.provider``), :func:`provider_for` builds it.

Shared by all three: a body must be JSON without a key given twice (:func:`parse_json`)
and goes upstream re-serialised from what was checked (:func:`serialise`), and a
pydantic validation error is told as the one field refused (:func:`explain`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from pydantic import ValidationError

from gateway.errors import UpstreamError
from gateway.usage import UsageTracker


class Refused(Exception):
    """A request the provider will not forward; the message is for the agent to read."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Call:
    """One request the provider accepted: exactly what goes upstream, and what it may cost."""

    action: str  # the route's name, for logs and metrics ("streamGenerateContent")
    model: str
    path: str  # built from the route table, never the client's bytes
    query: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...]  # the allowlisted request headers, without any key
    body: bytes  # the validated body, re-serialised
    metered: bool  # billed upstream: its spend is reserved before and settled after
    prompt_tokens: int  # an upper estimate of the prompt, from the body's size
    output_tokens: int  # the most the answer may use (the request's cap, else the default)


class Provider(ABC):
    """One upstream API as the gateway serves it (see the module docstring)."""

    name: str
    label: str  # as messages name it: "the Gemini API"
    title: str  # as budgets name it: "Gemini"

    def __init__(self, default_output_tokens: int) -> None:
        # The answer's cap when a request sets none (what its reservation counts on).
        self.default_output_tokens = default_output_tokens

    @abstractmethod
    def client_token(self, request: web.Request) -> str | None:
        """The session token the client presented (its idea of an API key)."""

    @abstractmethod
    def admit(
        self,
        method: str,
        raw_path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes,
        model: str,
    ) -> Call:
        """The call to make for this request on a session bound to ``model``; raises
        Refused for anything outside the route table or the request allowlist."""

    @abstractmethod
    def authorize(self, headers: CIMultiDict[str], secret: str) -> None:
        """Put the real key on an upstream request's headers."""

    @abstractmethod
    def usage_tracker(self, content_type: str) -> UsageTracker:
        """A meter for one response with this content type."""

    @abstractmethod
    def upstream_error(self, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
        """What an upstream 429 says about retrying (delay, per-day quota)."""

    @abstractmethod
    def error(self, status: int, message: str, *, retry_after: float | None = None) -> web.Response:
        """The gateway's own refusal, shaped like the provider's errors so clients report it."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one key: Python keeps the last, another parser may keep the first.
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise Refused(
                400, f"The request body gives `{key}` twice; the askbox gateway forwards only unambiguous JSON."
            )
        seen[key] = value
    return seen


def parse_json(body: bytes) -> Any:
    """The request body as JSON, refused when it is not, or gives a key twice."""
    try:
        return json.loads(body, object_pairs_hook=_reject_duplicates)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "The request body is not JSON (the askbox gateway forwards only JSON bodies).") from None


def serialise(parsed: Any) -> bytes:
    """What goes upstream: exactly what was checked, never the client's bytes (whose
    parsing could differ from Python's)."""
    try:
        return json.dumps(parsed, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (ValueError, UnicodeEncodeError):
        raise Refused(400, "The request body holds a number or a string that is not valid JSON.") from None


_BRANCHES = {"str", "int", "float", "bool", "none"}


def where(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a path into the body: ``messages[0].content``."""
    path = ""
    for item in loc:
        if isinstance(item, str) and (any(c in item for c in "[(,") or item in _BRANCHES):
            continue  # a union's branch name, not a field
        path += f"[{item}]" if isinstance(item, int) else (f".{item}" if path else str(item))
    return path or "the body"


def explain(exc: ValidationError, allowed: str) -> str:
    """One refused field, named: ``allowed`` says what a request may hold instead."""
    # A forbidden field says more than the required one missing beside it, and of a
    # union's branches the one that got furthest into the value says what is wrong.
    order = {"extra_forbidden": 0, "union_tag_invalid": 1, "literal_error": 2}
    error = min(exc.errors(), key=lambda e: (order.get(e["type"], 3), -len(e["loc"])))
    at = where(error["loc"])
    if error["type"] == "extra_forbidden":
        return f"The askbox gateway does not forward `{at}`: {allowed}"
    return f"The askbox gateway refused the request body at `{at}`: {error['msg']}. {allowed}"


def provider_for(name: str, default_output_tokens: int) -> Provider:
    """The provider called ``name`` ("gemini", "anthropic", "openai")."""
    from gateway.providers.anthropic import AnthropicProvider
    from gateway.providers.gemini import GeminiProvider
    from gateway.providers.openai import OpenAIProvider

    kinds: dict[str, type[Provider]] = {
        "gemini": GeminiProvider,
        "anthropic": AnthropicProvider,
        "openai": OpenAIProvider,
    }
    return kinds[name](default_output_tokens)
