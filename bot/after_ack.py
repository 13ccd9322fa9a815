"""Work that waits until Slack has its acknowledgement: deferred during a request, released
once the response is sent.

A listener returns as soon as its Redis work is done; what it posts to Slack (the
reaction, the status message, a modal, an ephemeral line) is ``defer``-red and run on
the bot's reply pool only after the transport sent Slack the ack: Socket Mode's
envelope ack (``AckFirstSocketModeHandler``) or HTTP mode's response
(bot/http_server.py). Slack's 3 s are never spent on Slack's own latency, and a post never
races the ack. Outside a request (tests, the CLI) deferred work runs at once.

A context variable rather than a thread-local: HTTP mode dispatches on a worker thread
(``asyncio.to_thread`` copies the context, so the list is the request's own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from time import time
from typing import Any

from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.socket_mode.internals import run_bolt_app, send_response

_deferred: ContextVar[list[Callable[[], Any]] | None] = ContextVar("askbox_after_ack", default=None)


def defer(action: Callable[[], Any]) -> None:
    """Run ``action`` once the current request is acknowledged (at once outside one)."""
    pending = _deferred.get()
    if pending is None:
        action()
    else:
        pending.append(action)


@contextmanager
def until_acked() -> Iterator[list[Callable[[], Any]]]:
    """Collect what the request defers; the caller releases it after sending the ack."""
    pending: list[Callable[[], Any]] = []
    token = _deferred.set(pending)
    try:
        yield pending
    finally:
        _deferred.reset(token)


def release(pending: list[Callable[[], Any]]) -> None:
    for action in pending:
        action()


class AckFirstSocketModeHandler(SocketModeHandler):
    """Bolt's Socket Mode handler, releasing the deferred work after the envelope's ack."""

    def handle(self, client: Any, req: Any) -> None:
        start = time()
        with until_acked() as pending:
            response = run_bolt_app(self.app, req)
        send_response(client, req, response, start)
        release(pending)
