"""The Slack Web API client: one factory for the worker and the bot, and what an error says.

The base URL (``ASKBOX_SLACK_API_URL``: a proxy, or a fake in tests) comes in as an
argument from the caller's settings; nothing here reads the environment.
"""

from __future__ import annotations

import threading
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler

from jobs import tracing
from jobs.slack.budget import SharedRateLimitHandler


class TracedWebClient(WebClient):
    """Each Web API call a span of the question's trace (jobs/tracing.py; nothing when off)."""

    def api_call(self, api_method: str, **kwargs: Any) -> Any:
        with tracing.span(f"slack {api_method}", {"slack.method": api_method}):
            return super().api_call(api_method, **kwargs)


def slack_client(token: str, base_url: str | None = None) -> WebClient:
    """A WebClient that sleeps through 429s (``Retry-After``; and reports them to the
    shared budget, see ``rate_limit_scope``) and retries dropped connections."""
    url = base_url or WebClient.BASE_URL
    client = TracedWebClient(token=token, base_url=url if url.endswith("/") else url + "/", timeout=30)
    client.retry_handlers = [ConnectionErrorRetryHandler(max_retry_count=2), SharedRateLimitHandler(max_retry_count=3)]
    return client


_clients: dict[tuple[str, str | None], WebClient] = {}
_clients_lock = threading.Lock()


def shared_client(token: str, base_url: str | None = None) -> WebClient:
    """This process's client for ``token`` at ``base_url``: one connection pool per
    token, however many questions a worker answers."""
    key = (token, base_url)
    with _clients_lock:
        return _clients.get(key) or _clients.setdefault(key, slack_client(token, base_url))


def error_code(exc: SlackApiError) -> str:
    """Slack's ``error`` field ("message_not_found", "ratelimited"…), or ""."""
    return str(exc.response.get("error") or "")


def http_status(exc: SlackApiError) -> int:
    return int(getattr(exc.response, "status_code", 0) or 0)
