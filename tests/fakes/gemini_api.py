"""A scriptable fake of the Gemini REST API (generativelanguage v1beta).

It speaks the subset that the real Gemini CLI (`@google/gemini-cli`, through the
`@google/genai` JS SDK) and the Python `google-genai` SDK use with API-key auth:

- ``POST /{v1beta|v1}/models/{model}:generateContent``
- ``POST /{v1beta|v1}/models/{model}:streamGenerateContent?alt=sse``
- ``POST /{v1beta|v1}/models/{model}:countTokens``
- ``GET  /{v1beta|v1}/models/{model}`` and ``GET .../models`` (cheap metadata)

The CLI (0.61) calls only ``streamGenerateContent`` with a fixed ``-m``; google-genai 3.x
uses ``v1`` unless told ``api_version="v1beta"``.

Anything else is answered with a JSON 404 and recorded in ``api.unknown``, so a
test can notice when a new CLI version starts calling something new.

Each generate request (stream or not) consumes one scripted turn::

    with FakeGeminiAPI() as api:
        api.script(FunctionCall("read_file", {"file_path": "x.txt"}),
                   Text("the answer", chunks=3))
        run_agent(base_url=api.base_url)
        assert api.function_responses()[0]["name"] == "read_file"

SSE framing matches the real service: ``data: {json}\\r\\n\\r\\n``, one JSON object
per event on a single line. The JS SDK's parser requires exactly that (its regex is
``/^\\s*data: (.*)(?:\\n\\n|\\r\\r|\\r\\n\\r\\n)/``), so the JSON must never span lines.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "FakeGeminiAPI",
    "FunctionCall",
    "FunctionCalls",
    "HttpError",
    "RecordedRequest",
    "Redirect",
    "Text",
    "Turn",
    "TurnFactory",
    "api_key_invalid",
    "daily_quota_exhausted",
    "max_in_window",
    "new_token",
    "rate_limited",
    "server_error",
    "unavailable",
]

JSON = dict[str, Any]


# --------------------------------------------------------------------------- turns


@dataclass(frozen=True)
class Text:
    """A plain model answer, split into ``chunks`` SSE events when streamed.

    ``delay`` seconds pass before each chunk after the first, to simulate a slow
    model (or, with a large delay, a hung one). ``finish_reason=None`` ends the stream
    without one, like a cut-off stream (the Gemini CLI then retries the request).
    ``thought`` adds a leading thought-summary part (``"thought": true``), as thinking
    models send when asked to include thoughts. ``usage=False`` leaves ``usageMetadata``
    out of every chunk (a response a client cannot meter).
    """

    text: str
    chunks: int = 1
    delay: float = 0.0
    finish_reason: str | None = "STOP"
    thought: str | None = None
    usage: bool = True


@dataclass(frozen=True)
class FunctionCall:
    """One ``functionCall`` part; as a turn, the model asks for this single tool call."""

    name: str
    args: JSON = field(default_factory=dict)
    # The public Gemini API sends no id; the CLI then makes up its own call ids.
    id: str | None = None

    def part(self) -> JSON:
        call: JSON = {"name": self.name, "args": self.args}
        if self.id is not None:
            call["id"] = self.id
        return {"functionCall": call}


@dataclass(frozen=True)
class FunctionCalls:
    """Several parallel function calls in one model turn, optionally after some text."""

    calls: tuple[FunctionCall, ...]
    text: str | None = None
    delay: float = 0.0

    def __init__(self, *calls: FunctionCall, text: str | None = None, delay: float = 0.0) -> None:
        object.__setattr__(self, "calls", tuple(calls))
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "delay", delay)


@dataclass(frozen=True)
class HttpError:
    """A non-200 answer with a Google-style ``{"error": {...}}`` body.

    ``delay`` seconds pass before answering (a slow failure).
    """

    code: int
    status: str
    message: str
    details: tuple[JSON, ...] = ()
    delay: float = 0.0

    def body(self) -> JSON:
        error: JSON = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = list(self.details)
        return {"error": error}


@dataclass(frozen=True)
class Redirect:
    """A redirect answer (``status``, ``Location: location``) instead of a model turn."""

    location: str
    status: int = 307


def rate_limited(
    retry_delay: str | None = "1s",
    *,
    quota_id: str = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
    message: str | None = None,
) -> HttpError:
    """A 429 RESOURCE_EXHAUSTED shaped like the real free-tier quota error.

    ``retry_delay`` goes into a ``google.rpc.RetryInfo`` detail ("1s", "250ms");
    ``None`` leaves that detail out. A ``quota_id`` containing "PerDay" makes the
    Gemini CLI treat the error as terminal (no retry).
    """
    if message is None:
        message = "You exceeded your current quota, please check your plan and billing details."
        if retry_delay:
            message += f" Please retry in {retry_delay}."
    details: list[JSON] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                    "quotaId": quota_id,
                    "quotaValue": "10",
                }
            ],
        }
    ]
    if retry_delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    return HttpError(429, "RESOURCE_EXHAUSTED", message, tuple(details))


def daily_quota_exhausted() -> HttpError:
    """The real per-day quota 429: no RetryInfo, a QuotaFailure with a PerDay quotaId."""
    return rate_limited(None, quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier")


def max_in_window(times: list[float], window: float) -> int:
    """The most timestamps (seconds) that fall within any span of ``window`` seconds."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def server_error(message: str = "An internal error has occurred.") -> HttpError:
    return HttpError(500, "INTERNAL", message)


def unavailable(message: str = "The model is overloaded. Please try again later.") -> HttpError:
    return HttpError(503, "UNAVAILABLE", message)


def api_key_invalid() -> HttpError:
    """The real answer to a wrong API key (HTTP 400, reason API_KEY_INVALID)."""
    message = "API key not valid. Please pass a valid API key."
    return HttpError(
        400,
        "INVALID_ARGUMENT",
        message,
        (
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": message,
            },
        ),
    )


Turn = Text | FunctionCall | FunctionCalls | HttpError | Redirect


@dataclass
class RecordedRequest:
    """One HTTP request as the fake saw it."""

    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: JSON | None  # parsed JSON, or None when empty / not JSON
    raw_body: bytes
    api_version: str | None = None  # v1beta (Gemini CLI) or v1 (google-genai >= 3 default)
    model: str | None = None
    action: str | None = None  # generateContent, streamGenerateContent, countTokens, ...
    status: int | None = None  # what the fake answered
    turn: Turn | None = None  # the turn that answered it (generate requests only)
    usage: JSON | None = None  # the final usageMetadata sent (what a client should meter)
    received_at: float = field(default_factory=time.monotonic)  # to measure retry delays

    @property
    def api_key(self) -> str | None:
        return self.headers.get("x-goog-api-key") or (self.query.get("key") or [None])[0]

    @property
    def is_generate(self) -> bool:
        return self.action in ("generateContent", "streamGenerateContent")

    def function_responses(self) -> list[JSON]:
        """The ``functionResponse`` parts of the LAST user content (the fresh tool results)."""
        contents = (self.body or {}).get("contents") or []
        if not contents:
            return []
        return [
            p["functionResponse"]
            for p in contents[-1].get("parts") or []
            if isinstance(p, dict) and "functionResponse" in p
        ]

    def all_function_responses(self) -> list[JSON]:
        """Every ``functionResponse`` part in the whole history the client re-sent."""
        return [
            p["functionResponse"]
            for content in (self.body or {}).get("contents") or []
            for p in content.get("parts") or []
            if isinstance(p, dict) and "functionResponse" in p
        ]

    def text(self) -> str:
        """All text the client sent in this request's history, joined (for asserting on)."""
        return "\n".join(
            p["text"]
            for content in (self.body or {}).get("contents") or []
            for p in content.get("parts") or []
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )

    def system_text(self) -> str:
        """The text of the request's ``systemInstruction`` (google-genai sends it there)."""
        parts = ((self.body or {}).get("systemInstruction") or {}).get("parts") or []
        return "\n".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))

    @property
    def wants_json(self) -> bool:
        """Whether the client asked for structured output (a response schema)."""
        config = (self.body or {}).get("generationConfig") or {}
        return config.get("responseMimeType") == "application/json"

    def declared_functions(self) -> list[str]:
        """Names of the tools the client declared in this request."""
        names: list[str] = []
        for tool in (self.body or {}).get("tools") or []:
            for decl in tool.get("functionDeclarations") or []:
                names.append(decl.get("name", ""))
        return names


TurnFactory = Callable[[RecordedRequest], Turn]


# ------------------------------------------------------------------------ responses

_response_ids = itertools.count(1)


def _usage(prompt_tokens: int, output_tokens: int) -> JSON:
    return {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": output_tokens,
        "totalTokenCount": prompt_tokens + output_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
    }


def _estimate_tokens(body: JSON | None) -> int:
    # Roughly 4 characters a token, like the real tokenizer on English text; tests
    # only need a stable, plausible, non-zero number.
    return max(1, len(json.dumps(body or {})) // 4)


def _split(text: str, chunks: int) -> list[str]:
    if not text:
        return [""]  # an empty answer is still one chunk (the CLI treats it as invalid)
    size = -(-len(text) // max(1, min(chunks, len(text))))  # ceiling division
    return [text[i : i + size] for i in range(0, len(text), size)]


def _candidate(parts: list[JSON], finish_reason: str | None) -> JSON:
    candidate: JSON = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish_reason:
        candidate["finishReason"] = finish_reason
    return candidate


def _chunk(model: str, response_id: str, candidate: JSON, usage: JSON) -> JSON:
    # The real service repeats usageMetadata on every chunk (growing counts) and
    # puts finishReason only on the last one.
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": response_id,
    }


@dataclass(frozen=True)
class _Event:
    delay: float
    payload: JSON


def _turn_events(turn: Turn, model: str, prompt_tokens: int) -> list[_Event]:
    """The stream of response chunks for a successful turn."""
    response_id = f"fake-{next(_response_ids)}"
    if isinstance(turn, Text):
        pieces = _split(turn.text, turn.chunks)
        events: list[_Event] = []
        emitted = 0
        if turn.thought:
            cand = _candidate([{"text": turn.thought, "thought": True}], None)
            events.append(_Event(0.0, _chunk(model, response_id, cand, _usage(prompt_tokens, 1))))
        for i, piece in enumerate(pieces):
            emitted += max(1, len(piece) // 4)
            last = i == len(pieces) - 1
            cand = _candidate([{"text": piece}], turn.finish_reason if last else None)
            delay = turn.delay if (i or events) else 0.0
            usage = _usage(prompt_tokens, emitted)
            events.append(_Event(delay, _chunk(model, response_id, cand, usage)))
        if not turn.usage:
            for ev in events:
                del ev.payload["usageMetadata"]
        return events
    if isinstance(turn, FunctionCall):
        turn = FunctionCalls(turn)
    assert isinstance(turn, FunctionCalls)
    events = []
    if turn.text:
        cand = _candidate([{"text": turn.text}], None)
        events.append(_Event(0.0, _chunk(model, response_id, cand, _usage(prompt_tokens, 1))))
    parts = [c.part() for c in turn.calls]
    cand = _candidate(parts, "STOP")
    usage = _usage(prompt_tokens, 10 * len(parts))
    events.append(_Event(turn.delay if events else 0.0, _chunk(model, response_id, cand, usage)))
    return events


def _merge(events: list[_Event]) -> JSON:
    """One non-streamed response equivalent to a list of streamed chunks."""
    parts: list[JSON] = []
    for ev in events:
        for p in ev.payload["candidates"][0]["content"]["parts"]:
            # Join consecutive plain-text pieces; thoughts and calls stay separate parts.
            if p.keys() == {"text"} and parts and parts[-1].keys() == {"text"}:
                parts[-1] = {"text": parts[-1]["text"] + p["text"]}
            else:
                parts.append(p)
    last = events[-1].payload
    finish = last["candidates"][0].get("finishReason")
    return {**last, "candidates": [_candidate(parts, finish)]}


# --------------------------------------------------------------------------- server

# The Gemini CLI's JS SDK calls v1beta; google-genai >= 3 defaults to v1. Both are served
# the same way, as the real service does for this subset.
_MODEL_PATH = re.compile(r"^/(?P<version>v1(?:alpha|beta)?)/models/(?P<model>[^/:]+)(?::(?P<action>[A-Za-z]+))?$")
_MODEL_LIST_PATH = re.compile(r"^/v1(?:alpha|beta)?/models/?$")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a hung slow stream must not block close()
    fake: FakeGeminiAPI


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so the SDKs keep connections alive and SSE goes out chunked, as
    # the real service does.
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded; stderr noise helps nobody

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    # Recorded and answered 404 like any unknown route, so a test sees every request that
    # reached the fake, whatever its method.
    do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_POST

    def _handle(self) -> None:
        self.answered = False
        try:
            self.server.fake._dispatch(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (cancelled, timed out): nothing to tell it
        except Exception as exc:  # noqa: BLE001 - a bug in the fake or in a turn callable
            # Record it so the test fails loudly instead of the agent silently retrying.
            self.server.fake.errors.append(exc)
            self.close_connection = True
            if self.answered:
                return  # mid-stream: closing the connection is all we can do
            try:
                bug = HttpError(500, "INTERNAL", f"fake Gemini API bug: {exc!r}")
                self.send_json(500, bug.body())
            except OSError:
                pass

    # -- low-level writers used by FakeGeminiAPI -------------------------------

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    answered = False  # whether a status line went out for the current request

    def send_json(self, status: int, payload: JSON) -> None:
        data = json.dumps(payload).encode()
        self.answered = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def send_redirect(self, status: int, location: str) -> None:
        self.answered = True
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.wfile.flush()

    def send_sse(self, events: Iterator[_Event]) -> None:
        self.answered = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for ev in events:
            if ev.delay:
                time.sleep(ev.delay)
            line = b"data: " + json.dumps(ev.payload, separators=(",", ":")).encode() + b"\r\n\r\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class FakeGeminiAPI:
    """A local fake Gemini API server; use as a context manager or start()/stop().

    ``host`` is 127.0.0.1 by default; use "0.0.0.0" only when a container must reach
    it through a bridge. ``port=0`` picks a free port. ``expected_key``, when set,
    makes every request with another API key fail with 400 API_KEY_INVALID.
    ``default`` answers generate requests once the script is used up.

    Quota simulation (generate requests only, checked in this order):

    - :meth:`start_storm` answers every request with a 5xx until :meth:`stop_storm`;
    - ``exhausted_keys``: keys whose per-day quota is gone (:func:`daily_quota_exhausted`);
    - ``per_key_limit=(N, window)``: at most N accepted requests per key in any
      ``window`` seconds (a moving window), beyond that a 429 whose retryDelay says when a
      slot frees. ``accepted`` records the accepted times per key (monotonic),
      ``quota_rejections`` counts the refusals;
    - :meth:`inject_429`: a seeded share of requests answered 429 with a retryDelay.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        expected_key: str | None = None,
        default: Turn | TurnFactory = Text("OK"),
        per_key_limit: tuple[int, float] | None = None,
    ) -> None:
        self.host = host
        self.per_key_limit = per_key_limit
        self.accepted: dict[str, list[float]] = {}
        self.quota_rejections = 0
        self.injected_429s = 0
        self.exhausted_keys: set[str] = set()
        self._inject_rate = 0.0
        self._inject_delay = "1s"
        self._rng = random.Random(0)
        self._storm: HttpError | None = None
        self.expected_key = expected_key
        self.default = default
        self.requests: list[RecordedRequest] = []
        self.unknown: list[RecordedRequest] = []
        self.errors: list[BaseException] = []  # exceptions raised while answering
        self._turns: deque[Turn | TurnFactory] = deque()
        self._lock = threading.Lock()
        self._server = _Server((host, port), _Handler)
        self._server.fake = self
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What to give clients (GOOGLE_GEMINI_BASE_URL, HttpOptions.base_url)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> FakeGeminiAPI:
        if self._thread is None:
            # A short poll interval keeps stop() (and so each test's teardown) quick.
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-gemini-api",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeGeminiAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting -------------------------------------------------------------

    def script(self, *turns: Turn | TurnFactory) -> FakeGeminiAPI:
        """Queue turns; each generate request consumes the next one."""
        with self._lock:
            self._turns.extend(turns)
        return self

    def inject_429(self, rate: float, *, seed: int = 0, retry_delay: str = "1s") -> FakeGeminiAPI:
        """Answer a share ``rate`` (0..1) of generate requests 429, reproducibly."""
        with self._lock:
            self._inject_rate, self._inject_delay = rate, retry_delay
            self._rng = random.Random(seed)
        return self

    def start_storm(self, error: HttpError | None = None) -> FakeGeminiAPI:
        """Every generate request fails (503 UNAVAILABLE by default) until stop_storm()."""
        self._storm = error or unavailable()
        return self

    def stop_storm(self) -> FakeGeminiAPI:
        self._storm = None
        return self

    @property
    def pending(self) -> int:
        """Scripted turns not yet consumed."""
        with self._lock:
            return len(self._turns)

    # -- inspection ------------------------------------------------------------

    @property
    def generate_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.is_generate]

    def function_responses(self) -> list[JSON]:
        """Every fresh functionResponse the client sent back, in order."""
        return [fr for r in self.generate_requests for fr in r.function_responses()]

    def endpoints(self) -> list[str]:
        """'METHOD path' of every request, in order (handy for asserting what was called)."""
        with self._lock:
            return [f"{r.method} {r.path}" for r in self.requests]

    # -- request handling --------------------------------------------------------

    def _next_turn(self, request: RecordedRequest) -> Turn:
        with self._lock:
            source = self._turns.popleft() if self._turns else self.default
        return source(request) if callable(source) else source

    def _record(self, handler: _Handler) -> RecordedRequest:
        url = urlsplit(handler.path)
        raw = handler.read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        req = RecordedRequest(
            method=handler.command,
            path=url.path,
            query=parse_qs(url.query),
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            raw_body=raw,
        )
        match = _MODEL_PATH.match(url.path)
        if match:
            req.api_version = match["version"]
            req.model, req.action = match["model"], match["action"]
        with self._lock:
            self.requests.append(req)
        return req

    def _dispatch(self, handler: _Handler) -> None:
        req = self._record(handler)
        if self.expected_key is not None and req.api_key != self.expected_key:
            self._answer_error(handler, req, api_key_invalid())
        elif req.method == "POST" and req.is_generate:
            self._answer_generate(handler, req)
        elif req.method == "POST" and req.action == "countTokens":
            req.status = 200
            handler.send_json(200, {"totalTokens": _estimate_tokens(req.body)})
        elif req.method == "GET" and req.model and not req.action:
            req.status = 200
            handler.send_json(200, _model_info(req.model))
        elif req.method == "GET" and _MODEL_LIST_PATH.match(req.path):
            req.status = 200
            handler.send_json(200, {"models": [_model_info("gemini-2.5-flash")]})
        else:
            with self._lock:
                self.unknown.append(req)
            message = f"fake Gemini API: no route for {req.method} {req.path}"
            self._answer_error(handler, req, HttpError(404, "NOT_FOUND", message))

    def _answer_error(self, handler: _Handler, req: RecordedRequest, err: HttpError) -> None:
        if err.delay:
            time.sleep(err.delay)
        req.status = err.code
        handler.send_json(err.code, err.body())

    def _quota(self, req: RecordedRequest) -> HttpError | None:
        """The quota simulation's answer to a generate request, or None to serve it."""
        if self._storm is not None:
            return self._storm
        key = req.api_key or ""
        if key in self.exhausted_keys:
            return daily_quota_exhausted()
        now = time.monotonic()
        with self._lock:
            if self.per_key_limit is not None:
                limit, window = self.per_key_limit
                recent = [t for t in self.accepted.get(key, []) if now - t < window]
                if len(recent) >= limit:
                    self.quota_rejections += 1
                    free_in = window - (now - recent[-limit])
                    return rate_limited(f"{max(free_in, 0.001):.3f}s")
            if self._inject_rate and self._rng.random() < self._inject_rate:
                self.injected_429s += 1
                return rate_limited(self._inject_delay)
            self.accepted.setdefault(key, []).append(now)
        return None

    def _answer_generate(self, handler: _Handler, req: RecordedRequest) -> None:
        refusal = self._quota(req)
        if refusal is not None:
            req.turn = refusal
            self._answer_error(handler, req, refusal)
            return
        turn = self._next_turn(req)
        req.turn = turn
        if isinstance(turn, HttpError):
            self._answer_error(handler, req, turn)
            return
        if isinstance(turn, Redirect):
            req.status = turn.status
            handler.send_redirect(turn.status, turn.location)
            return
        events = _turn_events(turn, req.model or "gemini", _estimate_tokens(req.body))
        req.status = 200
        req.usage = events[-1].payload.get("usageMetadata")
        if req.action == "streamGenerateContent":
            handler.send_sse(iter(events))
        else:
            # Non-streamed answers arrive whole, so the slowness is paid up front.
            time.sleep(sum(ev.delay for ev in events))
            handler.send_json(200, _merge(events))


def _model_info(model: str) -> JSON:
    return {
        "name": f"models/{model}",
        "version": "001",
        "displayName": model,
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
    }


def new_token() -> str:
    """A random marker for tests to plant in files and look for in answers."""
    return f"tok-{uuid.uuid4().hex[:12]}"
