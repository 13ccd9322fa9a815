"""HTTP mode (``askbox bot --http``): Bolt's ASGI adapter under uvicorn, with a request
deadline and a body-size limit.

Bolt's own ``App.start`` is a single-threaded development server that reads a whole
request before the signature is checked, so one client trickling bytes blocks every
event. uvicorn reads requests on an event loop (a slow client holds only its own
connection); what it lacks is added here, each piece for a reason uvicorn has no option:

- a deadline for a whole request to arrive (uvicorn times out idle keep-alive
  connections only, so a client trickling its headers or body would keep its
  connection, and a file descriptor, forever);
- a cap on the body, refused with 413 before it is read (uvicorn has none, and Bolt's
  adapter reads whatever comes);
- Bolt's sync ``App.dispatch`` run in a thread: the adapter calls it on the event loop,
  where a listener's Redis and Slack calls would stall every other connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import h11
import uvicorn
from slack_bolt import App
from slack_bolt.adapter.asgi import SlackRequestHandler
from slack_bolt.adapter.asgi.http_request import AsgiHttpRequest
from slack_bolt.request import BoltRequest
from slack_bolt.response import BoltResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from bot import after_ack
from bot.settings import BotSettings

log = logging.getLogger(__name__)

PATH = "/slack/events"
MAX_HEADERS = 16 * 1024  # Slack's headers are a few hundred bytes
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


class _ThreadedHandler(SlackRequestHandler):
    """Bolt's ASGI adapter, with the sync app's dispatch off the event loop, and what the
    listener deferred released once the response is sent (bot/after_ack.py)."""

    listeners = ThreadPoolExecutor(max_workers=32, thread_name_prefix="listener")

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        with after_ack.until_acked() as pending:
            await super().__call__(scope, receive, send)
        after_ack.release(pending)

    async def dispatch(self, request: AsgiHttpRequest) -> BoltResponse:
        bolt_request = BoltRequest(
            body=await request.get_raw_body(), query=request.query_string, headers=request.get_headers()
        )
        # On the listeners' own pool (a context copy, as asyncio.to_thread makes): the
        # default executor has cpu + 4 threads, and a listener mostly waits on Redis.
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self.listeners, functools.partial(context.run, self.app.dispatch, bolt_request)
        )


def limit_body(app: ASGIApp, max_bytes: int) -> ASGIApp:
    """``app`` behind a body cap: a declared or received body over ``max_bytes`` gets 413,
    and the app is called only once the whole body has arrived (so a slow body never
    reaches Bolt, and the request deadline below covers it)."""

    async def limited(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > max_bytes:
            return await _too_large(send, max_bytes)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client went away (or the deadline closed it)
            body += message.get("body", b"")
            if len(body) > max_bytes:
                return await _too_large(send, max_bytes)
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": bytes(body), "more_body": False}]

        async def replayed() -> dict[str, Any]:
            return replay.pop() if replay else await receive()

        return await app(scope, replayed, send)

    return limited


async def _too_large(send: Send, max_bytes: int) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"text/plain"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": f"request body over {max_bytes} bytes\n".encode()})


def deadline_protocol(timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request has not fully arrived
    ``timeout`` seconds after the connection opened (or its previous response was sent).
    A total deadline, not a per-read one: a byte every second must not keep it open."""

    class DeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            log.warning("closing a connection from %s: no whole request within %.0f s", self.client, timeout)
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
                self._disarm()  # the whole request is in: the listener's time is not the client's

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this keep-alive connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return DeadlineProtocol


def serve_http(make_app: Callable[[], App], bot: BotSettings, port: int, processes: int = 1) -> None:
    """Serves ``POST /slack/events`` until SIGTERM or SIGINT, in ``processes`` processes
    sharing one listening socket (bound here, before the fork; the kernel hands each
    connection to one of them). Each process builds its own app after the fork."""
    family = socket.AF_INET6 if ":" in bot.http_host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((bot.http_host, port))
    listener.listen(2048)
    listener.set_inheritable(True)
    log.info("bot: HTTP mode on %s:%d%s, %d process(es)", bot.http_host, port, PATH, processes)
    if processes == 1:
        _serve(make_app(), bot, listener)
        return
    _supervise([_fork(lambda: _serve(make_app(), bot, listener)) for _ in range(processes)])


def _serve(app: App, bot: BotSettings, listener: socket.socket) -> None:
    asgi = limit_body(_ThreadedHandler(app, path=PATH), bot.http_max_body)
    config = uvicorn.Config(
        asgi,
        http=deadline_protocol(bot.http_request_timeout),
        lifespan="off",
        log_config=None,
        server_header=False,
        h11_max_incomplete_event_size=MAX_HEADERS,
        timeout_keep_alive=bot.http_keep_alive,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[listener])


def _fork(serve: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # the child: serve until told to stop, never return into the parent's code
        code = 0
        try:
            serve()
        except BaseException:  # logged; the parent sees the exit code
            log.exception("bot process failed")
            code = 1
        os._exit(code)
    return pid


def _supervise(children: list[int]) -> None:
    """Wait for the children; SIGTERM/SIGINT is passed on to them, and one that ends on
    its own ends the others (the service's supervisor restarts the whole bot)."""
    stopping: list[int] = []  # the signal we passed on, if any

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failed = False
    alive = set(children)
    while alive:
        pid, status = os.wait()
        alive.discard(pid)
        # uvicorn re-raises the stop signal once it has shut down: -SIGTERM is a clean stop.
        if not stopping and not failed:
            failed = True
            log.error("bot process %d ended (%s): stopping the others", pid, os.waitstatus_to_exitcode(status))
            stop(signal.SIGTERM, None)
    if failed:
        raise SystemExit(1)
