"""What the fake Anthropic and OpenAI APIs share: a threaded HTTP server that records every
request, answers model calls from a script of turns, and simulates quota trouble.

Each provider's fake (``anthropic_api.py``, ``openai_api.py``) adds only its wire
protocol: its routes, where a request carries its key, how a turn is rendered (JSON or its
SSE events, with its usage fields) and how an error looks. The turns are the same for
both, so a test scripts "call this tool, then answer" once whatever the agent::

    with FakeAnthropicAPI() as api:
        api.script(ToolCall("Read", {"file_path": "/workspace/x.txt"}), Text("the answer", chunks=3))
        ...
        assert api.tool_results()[0]  # what the agent's tool returned

Anything outside a fake's routes is answered 404 and kept in ``unknown``, so a test notices
when a new CLI version calls something new.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

JSON = dict[str, Any]
_ids = itertools.count(1)


def next_id(prefix: str) -> str:
    return f"{prefix}{next(_ids):06d}fake"


# --------------------------------------------------------------------------- turns


@dataclass(frozen=True)
class Text:
    """A plain answer, streamed in ``chunks`` deltas (``delay`` seconds apart).
    ``usage=False`` leaves every usage field out (a response nobody can meter)."""

    text: str
    chunks: int = 1
    delay: float = 0.0
    usage: bool = True


@dataclass(frozen=True)
class ToolCall:
    """The model asks for one tool call (``id`` made up when None)."""

    name: str
    args: JSON = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class ToolCalls:
    """Several tool calls in one turn, optionally after some text."""

    calls: tuple[ToolCall, ...]
    text: str | None = None

    def __init__(self, *calls: ToolCall, text: str | None = None) -> None:
        object.__setattr__(self, "calls", tuple(calls))
        object.__setattr__(self, "text", text)


@dataclass(frozen=True)
class ApiError:
    """A non-2xx answer in the provider's error shape: ``kind`` is its error type
    ("rate_limit_error", "invalid_request_error"...), ``headers`` go out as given
    (``retry-after``, the rate-limit headers)."""

    status: int
    kind: str
    message: str
    headers: tuple[tuple[str, str], ...] = ()
    code: str | None = None  # OpenAI's error code ("rate_limit_exceeded", "model_not_found")


Turn = Text | ToolCall | ToolCalls | ApiError
TurnFactory = Callable[["RecordedRequest"], Turn]


def split(text: str, chunks: int) -> list[str]:
    if not text:
        return [""]
    size = -(-len(text) // max(1, min(chunks, len(text))))
    return [text[i : i + size] for i in range(0, len(text), size)]


def estimate_tokens(body: Any) -> int:
    # About 4 characters a token: tests need a stable, plausible, non-zero number.
    return max(1, len(json.dumps(body or {})) // 4)


# ------------------------------------------------------------------------- requests


@dataclass
class RecordedRequest:
    """One HTTP request as a fake saw it."""

    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None
    raw_body: bytes
    api_key: str | None = None
    status: int | None = None  # what the fake answered
    turn: Turn | None = None
    usage: JSON | None = None  # the usage the answer reported (what a meter must count)
    received_at: float = field(default_factory=time.monotonic)

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None


# --------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: ScriptedAPI


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked SSE, as the real services
    server: _Server
    answered = False

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.answered = False
        try:
            self.server.fake._dispatch(self)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # noqa: BLE001 - a bug in the fake or a turn callable: the test must see it
            self.server.fake.errors.append(exc)
            self.close_connection = True
            if not self.answered:
                try:
                    self.send_json(500, {"error": {"message": f"fake API bug: {exc!r}"}})
                except OSError:
                    pass

    do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_POST

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def send_json(self, status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        data = json.dumps(payload).encode()
        self.answered = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def send_sse(self, events: Iterable[tuple[float, str | None, JSON | str]]) -> None:
        """``(delay, event name or None, data)`` per event; chunked, flushed one by one."""
        self.answered = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for delay, name, data in events:
            if delay:
                time.sleep(delay)
            payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
            frame = (f"event: {name}\n" if name else "") + f"data: {payload}\n\n"
            raw = frame.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class ScriptedAPI:
    """The shared machinery; a provider's fake implements the abstract hooks below.

    ``expected_key``: any other key gets the provider's authentication error.
    ``default`` answers model calls once the script is used up. :meth:`inject_429`
    answers a seeded share of model calls with a rate-limit error (``retry-after``),
    :meth:`start_storm` every one with a 5xx until :meth:`stop_storm`.
    """

    name = "fake API"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        expected_key: str | None = None,
        default: Turn | TurnFactory = Text("OK"),
    ) -> None:
        self.host = host
        self.expected_key = expected_key
        self.default = default
        self.requests: list[RecordedRequest] = []
        self.unknown: list[RecordedRequest] = []
        self.errors: list[BaseException] = []
        self.injected_429s = 0
        self._inject_rate = 0.0
        self._inject_retry_after = "1"
        self._rng = random.Random(0)
        self._storm: ApiError | None = None
        self._turns: deque[Turn | TurnFactory] = deque()
        self._lock = threading.Lock()
        self._server = _Server((host, port), Handler)
        self._server.fake = self
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ScriptedAPI:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.name, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting -------------------------------------------------------------

    def script(self, *turns: Turn | TurnFactory):  # type: ignore[no-untyped-def]
        with self._lock:
            self._turns.extend(turns)
        return self

    def inject_429(self, rate: float, *, seed: int = 0, retry_after: str = "1"):  # type: ignore[no-untyped-def]
        with self._lock:
            self._inject_rate, self._inject_retry_after = rate, retry_after
            self._rng = random.Random(seed)
        return self

    def start_storm(self, error: ApiError | None = None):  # type: ignore[no-untyped-def]
        self._storm = error or self.overloaded()
        return self

    def stop_storm(self):  # type: ignore[no-untyped-def]
        self._storm = None
        return self

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._turns)

    # -- inspection ------------------------------------------------------------

    @property
    def model_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if self.is_model_call(r)]

    def endpoints(self) -> list[str]:
        with self._lock:
            return [f"{r.method} {r.path}" for r in self.requests]

    # -- provider hooks ----------------------------------------------------------

    def key_of(self, headers: dict[str, str], query: dict[str, list[str]]) -> str | None:
        raise NotImplementedError

    def is_model_call(self, request: RecordedRequest) -> bool:
        raise NotImplementedError

    def other_route(self, handler: Handler, request: RecordedRequest) -> bool:
        """Answer a non-model route this API serves (True), or leave it unknown (False)."""
        return False

    def answer(self, handler: Handler, request: RecordedRequest, turn: Text | ToolCall | ToolCalls) -> None:
        raise NotImplementedError

    def error_body(self, error: ApiError) -> JSON:
        raise NotImplementedError

    def rate_limited(self, retry_after: str | None = "1") -> ApiError:
        raise NotImplementedError

    def overloaded(self) -> ApiError:
        raise NotImplementedError

    def auth_error(self) -> ApiError:
        raise NotImplementedError

    # -- dispatch ----------------------------------------------------------------

    def _dispatch(self, handler: Handler) -> None:
        url = urlsplit(handler.path)
        raw = handler.read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in handler.headers.items()}
        query = parse_qs(url.query)
        request = RecordedRequest(
            handler.command, url.path, query, headers, body, raw, api_key=self.key_of(headers, query)
        )
        with self._lock:
            self.requests.append(request)
        if self.expected_key is not None and request.api_key != self.expected_key:
            self.send_error(handler, request, self.auth_error())
        elif self.is_model_call(request):
            self._model_call(handler, request)
        elif not self.other_route(handler, request):
            with self._lock:
                self.unknown.append(request)
            self.send_error(
                handler,
                request,
                ApiError(404, "not_found_error", f"{self.name}: no route for {request.method} {request.path}"),
            )

    def send_error(self, handler: Handler, request: RecordedRequest, error: ApiError) -> None:
        request.status = error.status
        handler.send_json(error.status, self.error_body(error), error.headers)

    def _model_call(self, handler: Handler, request: RecordedRequest) -> None:
        with self._lock:
            refusal = self._storm
            if refusal is None and self._inject_rate and self._rng.random() < self._inject_rate:
                self.injected_429s += 1
                refusal = self.rate_limited(self._inject_retry_after)
        if refusal is not None:
            request.turn = refusal
            self.send_error(handler, request, refusal)
            return
        with self._lock:
            source = self._turns.popleft() if self._turns else self.default
        turn = source(request) if callable(source) else source
        request.turn = turn
        if isinstance(turn, ApiError):
            self.send_error(handler, request, turn)
            return
        request.status = 200
        self.answer(handler, request, turn)


def calls_of(turn: Turn) -> tuple[tuple[ToolCall, ...], str | None]:
    """A tool-calling turn's calls and leading text."""
    if isinstance(turn, ToolCall):
        return (turn,), None
    assert isinstance(turn, ToolCalls)
    return turn.calls, turn.text
