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
header name itself, so a second provider (Anthropic, OpenAI) is one more module here
with its own route table and meter. Gemini's is :mod:`gateway.providers.gemini`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

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

    @abstractmethod
    def client_token(self, request: web.Request) -> str | None:
        """The session token the client presented (its idea of an API key)."""

    @abstractmethod
    def admit(self, method: str, raw_path: str, query: list[tuple[str, str]], headers: Mapping[str, str],
              body: bytes, model: str) -> Call:
        """The call to make for this request on a session bound to ``model``; raises
        Refused for anything outside the route table or the request allowlist."""

    @abstractmethod
    def authorize(self, headers: CIMultiDict[str], secret: str) -> None:
        """Put the real key on an upstream request's headers."""

    @abstractmethod
    def usage_tracker(self, content_type: str) -> UsageTracker:
        """A meter for one response with this content type."""

    @abstractmethod
    def upstream_error(self, body: bytes) -> UpstreamError:
        """What an upstream 429's body says about retrying (delay, per-day quota)."""

    @abstractmethod
    def error(self, status: int, message: str, *, retry_after: float | None = None) -> web.Response:
        """The gateway's own refusal, shaped like the provider's errors so clients report it."""
