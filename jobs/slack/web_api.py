"""The Slack Web API client: one factory for the worker and the bot, its retries, and what
an error says.

A request is retried only where a second one cannot do twice what Slack did once:

- 429 (``SharedRateLimitHandler``, slack_sdk's ``RateLimitErrorRetryHandler``): Slack
  says it did nothing; it is slept through and sent again.
- A connection that failed before the whole request was sent (refused, reset or timed
  out while connecting or writing): Slack cannot have acted on half a request.
- Any connection failure (also one while waiting for the answer) of a method whose
  second call changes nothing (``IDEMPOTENT_METHODS``: reads, edits, reactions).

Everything else (``chat.postMessage``, ``chat.startStream``/``appendStream``,
``files.completeUploadExternal``…) is never retried blind: a reset after Slack accepted
a post would post it twice. The caller sees the error (``ambiguous`` says which errors
leave it unknown whether Slack acted) and decides; the final message looks for its part
in the thread first (jobs/slack/thread_final.py).

The base URL (``ASKBOX_SLACK_API_URL``: a proxy, or a fake in tests) comes in as an
argument from the caller's settings; nothing here reads the environment.
"""

from __future__ import annotations

import threading
from http.client import HTTPException
from typing import Any
from urllib.error import HTTPError, URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from jobs import tracing
from jobs.slack.budget import SharedRateLimitHandler, method_of
from jobs.slack.keep_alive import KeepAliveWebClient

# Calls whose repetition leaves Slack as one call would: reads, and edits that set a
# state (a second reactions.add answers "already_reacted", a second chat.delete
# "message_not_found", which their callers take as done).
IDEMPOTENT_METHODS = frozenset(
    {
        "auth.test",
        "users.info",
        "conversations.replies",
        "apps.connections.open",
        "chat.update",
        "chat.delete",
        "reactions.add",
        "reactions.remove",
        "assistant.threads.setStatus",
        # Setting a state: a session's status or title, a user's Home tab, a DM's suggested prompts.
        "agents.sessions.setStatus",
        "agents.sessions.rename",
        "views.publish",
        "assistant.threads.setSuggestedPrompts",
        "chat.getPermalink",
    }
)


class SafeConnectionErrorRetryHandler(ConnectionErrorRetryHandler):
    """slack_sdk's connection-error retries, limited to requests Slack cannot have acted
    on: unsent ones, and idempotent methods.

    urllib raises ``URLError`` only while connecting or sending (``do_open`` wraps what
    ``HTTPConnection.request`` raises); a failure while reading the answer comes out
    raw (``RemoteDisconnected``, ``ConnectionResetError``, ``TimeoutError``), and then
    the request may have been carried out."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        return method_of(request.url) in IDEMPOTENT_METHODS or not sent(error)


def sent(error: BaseException | None) -> bool:
    """Whether a failed request may have reached Slack whole (see the handler above)."""
    return not (isinstance(error, URLError) and not isinstance(error, HTTPError))


def ambiguous(exc: BaseException) -> bool:
    """An error after which it is unknown whether Slack carried the call out: a
    connection lost after the request was sent, or a 5xx (Slack's edge may fail after
    the post was made). A Slack error answer (``ok: false``, 4xx, 429) is not: it says
    what happened."""
    if isinstance(exc, SlackApiError):
        return http_status(exc) >= 500
    return isinstance(exc, (OSError, HTTPException)) and sent(exc)


class TracedWebClient(KeepAliveWebClient):
    """Each Web API call a span of the question's trace (jobs/tracing.py; nothing when off), over
    connections kept alive."""

    def api_call(self, api_method: str, **kwargs: Any) -> Any:
        with tracing.span(f"slack {api_method}", {"slack.method": api_method}):
            return super().api_call(api_method, **kwargs)


def slack_client(token: str, base_url: str | None = None) -> WebClient:
    """A WebClient that sleeps through 429s (``Retry-After``; and reports them to the
    shared budget, see ``rate_limit_scope``) and retries a dropped connection only when
    the retry cannot double what Slack did."""
    url = base_url or WebClient.BASE_URL
    # Connections kept alive per thread (jobs/slack/keep_alive.py): slack_sdk opens one per call.
    client = TracedWebClient(token=token, base_url=url if url.endswith("/") else url + "/", timeout=30)
    client.retry_handlers = [
        SafeConnectionErrorRetryHandler(max_retry_count=2),
        SharedRateLimitHandler(max_retry_count=3),
    ]
    return client


_clients: dict[tuple[str, str | None], WebClient] = {}
_clients_lock = threading.Lock()


def shared_client(token: str, base_url: str | None = None) -> WebClient:
    """This process's client for ``token`` at ``base_url``, however many questions a
    worker answers."""
    key = (token, base_url)
    with _clients_lock:
        return _clients.get(key) or _clients.setdefault(key, slack_client(token, base_url))


def error_code(exc: SlackApiError) -> str:
    """Slack's ``error`` field ("message_not_found", "ratelimited"…), or ""."""
    return str(exc.response.get("error") or "")


def http_status(exc: SlackApiError) -> int:
    return int(getattr(exc.response, "status_code", 0) or 0)
