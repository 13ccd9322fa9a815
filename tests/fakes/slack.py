"""A fake Slack that the REAL ``slack_sdk`` / ``slack_bolt`` talk to, strict like Slack.

Web API: ``POST /api/<method>`` on 127.0.0.1 (random port), form, multipart or JSON
bodies, ``Authorization: Bearer`` auth. Every call is validated against the method
descriptions in ``tests/fixtures/slack-api/methods`` (required args, typed properties,
rate-limit tier, error codes), then answered from an in-memory workspace: channels,
threads, streams, reactions, files, users, assistant statuses.

Socket Mode: ``apps.connections.open`` (app token) hands out a single-use
``ws://127.0.0.1:<port>/link/?ticket=...`` URL; the fake says ``hello`` on connect,
pushes ``events_api`` / ``interactive`` envelopes and records the acks.

Usage::

    with FakeSlack() as fake:
        client = WebClient(token=fake.bot_token, base_url=fake.api_url)
        app = App(client=client)                       # Bolt: auth.test goes to the fake
        SocketModeHandler(app, fake.app_token).connect()
        fake.wait_connections(1)
        env = fake.push_event(fake.app_mention("U1", "C1", "hi"))
        fake.wait_ack(env)
        fake.wait_until(lambda: len(fake.thread("C1", env.event["ts"])) == 2)

Scripting: ``rate_limit(method, times, retry_after)`` (HTTP 429 + Retry-After),
``fail(method, error, times)``, ``server_error(method, times, after_effect=...)``,
``connection_reset(method, times, after_effect=...)`` (the request is read, maybe
carried out, and the connection reset with no answer), ``expire_streams()``, ``enforce_tiers=True``
(429 when a tier is exceeded over a sliding minute). Assertions: ``calls(method)``,
``thread(channel, ts)``, ``rate_report()``, ``tier_violations()``.

Where Slack's behaviour is not documented the fake picks the stricter reading and says
so in a comment; see ``_TEXT_LIMITS`` and ``_stream_text``.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import hmac
import http
import itertools
import json
import math
import re
import secrets
import socket
import string
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from bot.manifest import SCOPES as MANIFEST_SCOPES

__all__ = [
    "RESET",
    "Ack",
    "Call",
    "Envelope",
    "FakeSlack",
    "File",
    "ManualClock",
    "Message",
    "MethodRate",
    "MethodSpec",
    "load_methods",
    "signed_request",
]

JSON = dict[str, Any]
# The bot token's scopes when a test does not say otherwise: an app installed from askbox's
# manifest (bot/manifest.py, `askbox slack manifest`).
BOT_SCOPES = tuple(MANIFEST_SCOPES)
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slack-api"

# Slack's documented tiers, in calls per minute per method per workspace ("20+" etc.:
# the "+" is tolerance we do not grant, so a client that passes here passes there).
TIER_PER_MINUTE = {"t1": 1, "t2": 20, "t3": 50, "t4": 100}
# The fixtures write Slack's "Special" tier as "t5". chat.postMessage's special rule is
# per channel (see _post_message_limits); the others have no published number, so they
# get Tier 4's.
SPECIAL_PER_MINUTE = 100

# A Call's status when the fake reset the connection instead of answering.
RESET = 0

# Errors any method can answer, on top of the ones each fixture lists.
GENERIC_ERRORS = frozenset(
    {
        "accesslimited", "account_inactive", "deprecated_endpoint", "ekm_access_denied",
        "enterprise_is_restricted", "fatal_error", "internal_error", "invalid_arg_name",
        "invalid_arguments", "invalid_array_arg", "invalid_auth", "invalid_charset",
        "invalid_form_data", "invalid_post_type", "missing_post_type", "missing_scope",
        "no_permission", "not_allowed_token_type", "not_authed", "ratelimited",
        "request_timeout", "service_unavailable", "team_added_to_org", "token_expired",
        "token_revoked", "two_factor_setup_required",
    }
)  # fmt: skip

# (method, field) -> max characters. The brief (and old Slack docs) say msg_too_long for
# text over 40,000; today's docs describe truncation with a warning instead. We refuse:
# an app that relies on truncation would lose the end of an answer silently.
# markdown_text is documented as "limit 12,000" with no error code; the fixtures list
# msg_too_long only for chat.update / chat.postEphemeral, so we use it everywhere.
_TEXT_LIMITS = {
    "text": 40_000,
    "markdown_text": 12_000,
}
_TEXT_LIMITED_METHODS = {
    "chat.postMessage", "chat.update", "chat.postEphemeral",
    "chat.startStream", "chat.appendStream", "chat.stopStream",
}  # fmt: skip

_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_TS = re.compile(r"^\d{9,11}\.\d{6}$")
_EMOJI_NAME = re.compile(r"^[a-z0-9_+'\-]+(::skin-tone-[2-6])?$")

_BLOCK_TYPES = {
    "actions", "context", "context_actions", "divider", "file", "header", "image", "input",
    "markdown", "rich_text", "section", "video", "table", "plan", "task_card",
}  # fmt: skip
_CHUNK_TYPES = {"markdown_text", "task_update", "plan_update", "blocks"}


# --------------------------------------------------------------------------- clock


class ManualClock:
    """A clock tests move by hand, for stream expiry and sliding-minute checks."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


# --------------------------------------------------------------------------- method specs


@dataclass(frozen=True)
class MethodSpec:
    name: str
    tier: str
    required: tuple[str, ...]
    properties: JSON
    errors: frozenset[str]
    json_ok: bool

    @classmethod
    def from_file(cls, path: Path) -> MethodSpec:
        doc = json.loads(path.read_text())
        args = doc.get("args") or {}
        return cls(
            name=path.name.removesuffix(".json"),
            tier=doc.get("rate_limits", ""),
            required=tuple(args.get("required") or ()),
            properties=dict(args.get("properties") or {}),
            errors=frozenset(doc.get("errors") or {}),
            json_ok=bool(doc.get("json_input_supported")),
        )

    def per_minute(self, overrides: dict[str, int]) -> int | None:
        if self.name in overrides:
            return overrides[self.name]
        if self.tier in overrides:
            return overrides[self.tier]
        if self.tier == "t5":
            return SPECIAL_PER_MINUTE
        return TIER_PER_MINUTE.get(self.tier)


def load_methods(root: Path = FIXTURES) -> dict[str, MethodSpec]:
    specs = [MethodSpec.from_file(p) for p in sorted((root / "methods").glob("*.json"))]
    return {s.name: s for s in specs}


def _allowed_types(prop: JSON) -> set[str]:
    kind = prop.get("type")
    if isinstance(kind, list):
        return set(kind)
    if isinstance(kind, str):
        return {kind}
    if "anyOf" in prop:
        return {alt["type"] for alt in prop["anyOf"] if "type" in alt}
    if prop.get("schema") == "prompts":  # assistant.threads.setSuggestedPrompts: a JSON array of {title, message}
        return {"array"}
    if "schema" in prop:  # "ts", "user_id", "channel": all strings on the wire
        return {"string"}
    return set()  # untyped (chat.stopStream's blocks): anything goes


def _type_problem(name: str, prop: JSON, value: Any, form: bool) -> str | None:
    """Why ``value`` does not fit the fixture's type for ``name``, or None.

    Form bodies carry only strings, so strings are judged by whether they parse.
    Fields documented as "JSON ... presented as a URL-encoded string" (blocks,
    attachments, metadata, files) take the decoded JSON too, as Slack does.
    """
    kinds = _allowed_types(prop)
    if not kinds or (value is None and "null" in kinds):
        return None
    desc = str(prop.get("desc", ""))
    json_string = "JSON" in desc or name in {"blocks", "attachments", "metadata", "files"}
    if isinstance(value, str):
        if "string" in kinds:
            return _length_problem(name, prop, value)
        if "integer" in kinds and re.fullmatch(r"-?\d+", value):
            return None
        if "number" in kinds and re.fullmatch(r"-?\d+(\.\d+)?", value):
            return None
        if "boolean" in kinds and value.lower() in {"true", "false", "1", "0", ""}:
            return None
        if "array" in kinds:
            return _array_problem(name, prop, _as_list(value))
        if "object" in kinds:
            try:
                return None if isinstance(json.loads(value), dict) else f"must be an object: {name}"
            except ValueError:
                return f"invalid JSON for field: {name}"
        return f"invalid type for field: {name} (expected {'/'.join(sorted(kinds))}, got string)"
    if isinstance(value, bool):
        ok = "boolean" in kinds or form
        return None if ok else f"invalid type for field: {name} (expected {'/'.join(sorted(kinds))}, got boolean)"
    if isinstance(value, (int, float)):
        ok = kinds & {"integer", "number", "string", "boolean"}
        return None if ok else f"invalid type for field: {name} (expected {'/'.join(sorted(kinds))}, got number)"
    if isinstance(value, list):
        if "array" in kinds:
            return _array_problem(name, prop, value)
        return (
            None if json_string else f"invalid type for field: {name} (expected {'/'.join(sorted(kinds))}, got array)"
        )
    if isinstance(value, dict):
        return (
            None
            if "object" in kinds or json_string
            else (f"invalid type for field: {name} (expected {'/'.join(sorted(kinds))}, got object)")
        )
    return f"invalid type for field: {name}"


def _length_problem(name: str, prop: JSON, value: str) -> str | None:
    if "enum" in prop and value not in prop["enum"]:
        return f"must be one of {prop['enum']}: {name}"
    if "maxLength" in prop and len(value) > prop["maxLength"]:
        return f"must be at most {prop['maxLength']} characters: {name}"
    if "minLength" in prop and len(value) < prop["minLength"]:
        return f"must be at least {prop['minLength']} characters: {name}"
    return None


def _array_problem(name: str, prop: JSON, items: list[Any] | None) -> str | None:
    if items is None:
        return f"invalid array for field: {name}"
    if "maxItems" in prop and len(items) > prop["maxItems"]:
        return f"no more than {prop['maxItems']} items allowed: {name}"
    if "minItems" in prop and len(items) < prop["minItems"]:
        return f"at least {prop['minItems']} items required: {name}"
    item_spec = prop.get("items") or {}
    for i, item in enumerate(items):
        if item_spec.get("type") == "string" and isinstance(item, str):
            problem = _length_problem(f"{name}[{i}]", item_spec, item)
            if problem:
                return problem
    return None


def _as_list(value: Any) -> list[Any] | None:
    """Arrays arrive as lists (JSON), JSON strings or comma lists (form)."""
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                decoded = json.loads(text)
            except ValueError:
                return None
            return decoded if isinstance(decoded, list) else None
        return [part for part in text.split(",") if part] if text else []
    return None


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in {"true", "1"}
    return bool(value)


# --------------------------------------------------------------------------- records


class _SlackError(Exception):
    """An ``{"ok": false}`` answer raised from inside a handler."""

    def __init__(self, error: str, *messages: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.messages = list(messages)
        self.extra = extra


@dataclass(frozen=True)
class Call:
    """One Web API request as the fake saw and answered it."""

    method: str
    args: JSON  # without the token
    token: str | None
    encoding: str  # "json" | "form" | "multipart" | "query" | "none"
    time: float
    status: int
    response: JSON
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        return self.response.get("error")

    @property
    def channel(self) -> str | None:
        return self.args.get("channel") or self.args.get("channel_id")


@dataclass
class File:
    id: str
    name: str
    length: int  # what files.getUploadURLExternal was told
    title: str | None = None
    content: bytes | None = None  # None until the bytes are POSTed to the upload URL
    shared_in: list[tuple[str, str]] = field(default_factory=list)  # (channel, message ts)
    alt_txt: str | None = None
    snippet_type: str | None = None

    @property
    def uploaded(self) -> bool:
        return self.content is not None

    def to_api(self, user: str, created: int) -> JSON:
        return {
            "id": self.id,
            "name": self.name,
            "title": self.title or self.name,
            "size": len(self.content or b""),
            "mimetype": "text/plain",
            "created": created,
            "user": user,
            "is_external": False,
            "permalink": f"https://fake.slack.com/files/{user}/{self.id}/{self.name}",
        }


@dataclass
class Message:
    """A message as the workspace holds it (thread replies have ``thread_ts``)."""

    channel: str
    ts: str
    text: str = ""
    user: str | None = None
    bot_id: str | None = None
    app_id: str | None = None
    thread_ts: str | None = None  # the parent's ts for replies, None for top-level
    blocks: list[JSON] | None = None
    attachments: list[JSON] | None = None
    metadata: Any = None
    subtype: str | None = None
    markdown: bool = False  # posted with markdown_text
    reactions: dict[str, list[str]] = field(default_factory=dict)
    files: list[File] = field(default_factory=list)
    stream: str | None = None  # None: not a stream; "streaming" | "stopped" | "expired"
    stream_started: float | None = None
    chunks: list[JSON] = field(default_factory=list)
    edits: int = 0
    history: list[str] = field(default_factory=list)  # texts before each edit
    deleted: bool = False
    ephemeral_to: str | None = None

    @property
    def is_bot(self) -> bool:
        return self.bot_id is not None

    @property
    def streaming(self) -> bool:
        return self.stream == "streaming"

    def to_api(self, team_id: str, replies: list[Message] | None = None) -> JSON:
        out: JSON = {"type": "message", "ts": self.ts, "text": self.text, "team": team_id}
        if self.user:
            out["user"] = self.user
        if self.bot_id:
            out["bot_id"] = self.bot_id
            out["app_id"] = self.app_id
        if self.subtype:
            out["subtype"] = self.subtype
        if self.blocks is not None:
            out["blocks"] = self.blocks
        if self.attachments is not None:
            out["attachments"] = self.attachments
        if self.metadata is not None:
            out["metadata"] = self.metadata
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if replies:
            out["thread_ts"] = self.ts
            out["reply_count"] = len(replies)
            out["reply_users"] = sorted({r.user or r.bot_id or "" for r in replies})
            out["latest_reply"] = replies[-1].ts
        if self.reactions:
            out["reactions"] = [
                {"name": name, "users": list(users), "count": len(users)} for name, users in self.reactions.items()
            ]
        if self.files:
            out["files"] = [f.to_api(self.user or "", int(float(self.ts))) for f in self.files]
            out["upload"] = True
        if self.edits:
            out["edited"] = {"user": self.user, "ts": self.ts}
        return out


@dataclass(frozen=True)
class Envelope:
    """A Socket Mode envelope the fake sent, and to which connections."""

    envelope_id: str
    type: str
    body: JSON
    sent_to: tuple[int, ...]

    @property
    def payload(self) -> JSON:
        return self.body["payload"]

    @property
    def event(self) -> JSON:
        return self.body["payload"].get("event", {})

    @property
    def event_id(self) -> str | None:
        return self.body["payload"].get("event_id")


@dataclass(frozen=True)
class Ack:
    envelope_id: str
    payload: JSON | None
    time: float
    connection: int  # the connection's serial number (see FakeSlack.connection_ids)


@dataclass(frozen=True)
class MethodRate:
    """How fast one method was called, against its tier."""

    method: str
    tier: str
    limit_per_minute: int | None
    calls: int
    peak_per_minute: int
    peak_per_minute_by_channel: dict[str, int]
    peak_per_second_by_channel: dict[str, int]
    calls_per_minute: float  # average over the span between first and last call (>= 1 min)


@dataclass
class _Socket:
    serial: int
    conn: ServerConnection
    connected_at: float
    received: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers


def signed_request(body: str, signing_secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack sends with an HTTP event: v0 HMAC-SHA256 over ``v0:{ts}:{body}``."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    base = f"v0:{ts}:{body}".encode()
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    kind = "application/json" if body.lstrip().startswith("{") else "application/x-www-form-urlencoded"
    return {
        "Content-Type": kind,
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": f"v0={digest}",
    }


def _random_id(prefix: str, length: int = 10) -> str:
    alphabet = string.ascii_uppercase + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def _sliding_peak(times: list[float], window: float) -> int:
    """Most calls inside any half-open window of ``window`` seconds."""
    ordered = sorted(times)
    peak, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


def _channel_type(channel: str) -> str:
    return {"C": "channel", "G": "group", "D": "im"}.get(channel[:1], "channel")


# --------------------------------------------------------------------------- the fake


class FakeSlack:
    """One fake workspace with one installed app (bot token + app-level token)."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-1111-2222-fakebottoken",
        app_token: str = "xapp-1-A0FAKEAPP01-3333-fakeapptoken",
        team_id: str = "T0FAKETEAM1",
        team_name: str = "Fake Workspace",
        app_id: str = "A0FAKEAPP01",
        bot_user_id: str = "U0FAKEBOT01",
        bot_id: str = "B0FAKEBOT01",
        bot_name: str = "askbox",
        verification_token: str = "fake-verification-token",
        stream_ttl: float = 300.0,
        status_ttl: float = 120.0,
        enforce_tiers: bool = False,
        tier_limits: dict[str, int] | None = None,
        post_message_per_minute: int = 60,
        post_message_burst: int = 3,
        socket_ping_interval: float | None = 0.2,
        clock: Callable[[], float] = time.time,
        fixtures: Path = FIXTURES,
        scopes: Iterable[str] | None = None,
        trigger_ttl: float = 3.0,
        latency: float = 0.0,
    ) -> None:
        self.bot_token, self.app_token = bot_token, app_token
        self.team_id, self.team_name, self.app_id = team_id, team_name, app_id
        self.bot_user_id, self.bot_id, self.bot_name = bot_user_id, bot_id, bot_name
        self.verification_token = verification_token
        self.stream_ttl, self.status_ttl = stream_ttl, status_ttl
        self.enforce_tiers = enforce_tiers
        self.tier_limits = dict(tier_limits or {})
        # chat.postMessage: "1 per second per channel, short bursts allowed".
        self.post_message_per_minute = post_message_per_minute
        self.post_message_burst = post_message_burst
        # Slack pings Socket Mode clients too. Frequent pings matter for the builtin
        # SocketModeClient: its close() waits for a blocking recv (3 s timeout on ws://).
        self.socket_ping_interval = socket_ping_interval
        self.clock = clock
        self.methods = load_methods(fixtures)
        self.event_samples = {
            p.name.removesuffix(".json"): json.loads(p.read_text()) for p in (fixtures / "events").glob("*.json")
        }

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._calls: list[Call] = []
        self._channels: dict[str, dict[str, Message]] = {}
        self._ephemerals: list[Message] = []
        self._users: dict[str, JSON] = {}
        self._files: dict[str, File] = {}
        self._statuses: dict[tuple[str, str], list[tuple[float, str]]] = {}
        self._rate_limits: dict[str, deque[int]] = {}
        self._server_errors: dict[str, deque[tuple[int, bool]]] = {}
        self._failures: dict[str, deque[tuple[str, Callable[[JSON], bool] | None]]] = {}
        self._resets: dict[str, deque[tuple[bool, Callable[[JSON], bool] | None]]] = {}
        self._admitted: dict[tuple[str, str | None], deque[float]] = {}
        self._last_ts = 0.0
        self._tickets: set[str] = set()
        self._sockets: list[_Socket] = []
        self._socket_serial = itertools.count()
        self._acks: dict[str, Ack] = {}
        self._envelopes: list[Envelope] = []
        self.responses: list[tuple[str, JSON | str]] = []  # (response_url id, body) POSTed back
        # The bot token's granted scopes, sent back as Slack does in X-OAuth-Scopes on every
        # Web API answer; unless a test says otherwise, what the app's manifest asks for.
        self.scopes: list[str] = sorted(scopes if scopes is not None else BOT_SCOPES)
        # A trigger_id is good for one views.open, within 3 s of the click (Slack's rule).
        self.trigger_ttl = trigger_ttl
        # Seconds every Web API call takes before its answer (real Slack's round trip; 0: instant).
        self.latency = latency
        self._triggers: dict[str, float] = {}
        self._used_triggers: set[str] = set()
        self._views: dict[str, JSON] = {}  # view id -> the view as opened or published
        self.connections_accepted = 0  # HTTP connections clients opened (kept alive between calls)
        self._open_connections: set[socket.socket] = set()
        self.home_views: dict[str, JSON] = {}  # user -> their Home tab
        self.suggested_prompts: dict[tuple[str, str | None], JSON] = {}  # (channel, thread_ts) -> args
        # (channel, thread_ts) -> [(time, status, title)]: agents.sessions.setStatus/rename and
        # chat.stopStream's session_status, oldest first.
        self.sessions: dict[tuple[str, str], list[tuple[float, str, str]]] = {}
        self.client_messages: list[tuple[int, str]] = []  # every text frame from clients

        self.add_user(bot_user_id, name=bot_name, is_bot=True)
        self._http: ThreadingHTTPServer | None = None
        self._ws: Server | None = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        fake = self

        class Handler(_HTTPHandler):
            owner = fake

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that goes away with a kept-alive connection open (a bot
                # stopped at a test's end) is no error of the fake's.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self._http = Server(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        # close_timeout small: the builtin SocketModeClient never answers a close frame.
        self._ws = serve(
            self._ws_session,
            "127.0.0.1",
            0,
            process_request=self._ws_check_ticket,
            close_timeout=0.5,
            compression=None,
            ping_interval=self.socket_ping_interval,
        )
        http_server = self._http
        # A short poll interval: shutdown() waits for it, once per test.
        targets = (lambda: http_server.serve_forever(poll_interval=0.05), self._ws.serve_forever)
        for i, target in enumerate(targets):
            thread = threading.Thread(target=target, name=f"fake-slack-{('http', 'ws')[i]}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            sock.conn.close()
        if self._ws is not None:
            self._ws.shutdown()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        assert self._http is not None, "FakeSlack not started"
        return f"http://127.0.0.1:{self._http.server_address[1]}/"

    @property
    def api_url(self) -> str:
        """Like ``https://slack.com/api/``: pass as ``WebClient(base_url=...)``."""
        return self.base_url + "api/"

    @property
    def ws_port(self) -> int:
        assert self._ws is not None, "FakeSlack not started"
        return self._ws.socket.getsockname()[1]

    # ------------------------------------------------------------------ scripting

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """The next ``times`` calls to ``method`` get HTTP 429 + ``Retry-After``."""
        self._spec(method)
        if int(retry_after) != retry_after or retry_after < 0:
            # slack_sdk does int(header): Slack sends whole seconds.
            raise ValueError("retry_after must be a whole number of seconds")
        with self._lock:
            self._rate_limits.setdefault(method, deque()).extend([int(retry_after)] * times)

    def server_error(self, method: str, times: int = 1, *, status: int = 503, after_effect: bool = False) -> None:
        """The next ``times`` calls to ``method`` get HTTP ``status`` (a 5xx). With
        ``after_effect`` the call takes effect first (Slack posted, then its edge failed):
        the caller cannot tell, so only an idempotent retry avoids a second message."""
        if not 500 <= status <= 599:
            raise ValueError("a server error is a 5xx")
        self._spec(method)
        with self._lock:
            self._server_errors.setdefault(method, deque()).extend([(status, after_effect)] * times)

    def connection_reset(
        self, method: str, times: int = 1, *, after_effect: bool = True, when: Callable[[JSON], bool] | None = None
    ) -> None:
        """The next ``times`` calls to ``method`` (matching ``when(args)``) get no answer:
        the fake reads the whole request, carries it out (``after_effect``; else not) and
        resets the connection (TCP RST). What a client sees when Slack's answer is lost on
        the way: it cannot tell whether the call took effect. Recorded as calls with
        status ``RESET``."""
        self._spec(method)
        with self._lock:
            self._resets.setdefault(method, deque()).extend([(after_effect, when)] * times)

    def fail(
        self,
        method: str,
        error: str,
        times: int = 1,
        *,
        when: Callable[[JSON], bool] | None = None,
        strict: bool = True,
    ) -> None:
        """The next ``times`` calls (matching ``when(args)``) answer ``{"ok": false, "error": error}``.

        ``error`` must be one Slack documents for that method (``strict=False`` to
        script an undocumented one), so tests do not invent failures Slack never sends.
        """
        spec = self._spec(method)
        if strict and error not in spec.errors | GENERIC_ERRORS:
            raise ValueError(f"{method} does not document error {error!r}; known: {sorted(spec.errors)}")
        with self._lock:
            self._failures.setdefault(method, deque()).extend([(error, when)] * times)

    def close_idle_connections(self) -> int:
        """Close every client connection from the server's side (as an edge does to idle
        keep-alive connections); how many."""
        with self._lock:
            open_now = list(self._open_connections)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(open_now)

    def expire_streams(self) -> list[str]:
        """Every stream still streaming expires now; returns their ts."""
        with self._lock:
            expired = []
            for msg in self._all_messages():
                if msg.streaming:
                    msg.stream = "expired"
                    expired.append(msg.ts)
            self._changed.notify_all()
            return expired

    def add_user(
        self,
        user_id: str,
        *,
        name: str | None = None,
        real_name: str | None = None,
        is_bot: bool = False,
        team_id: str | None = None,
        tz: str = "Europe/Paris",
        **profile: Any,
    ) -> JSON:
        name = name or user_id.lower()
        user = {
            "id": user_id,
            "team_id": team_id or self.team_id,
            "name": name,
            "deleted": False,
            "real_name": real_name or name.title(),
            "tz": tz,
            "tz_label": "Central European Time",
            "tz_offset": 3600,
            "profile": {
                "real_name": real_name or name.title(),
                "display_name": name,
                "team": team_id or self.team_id,
                **({"bot_id": self.bot_id} if is_bot and user_id == self.bot_user_id else {}),
                **profile,
            },
            "is_admin": False,
            "is_owner": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": 1_700_000_000,
        }
        with self._lock:
            self._users[user_id] = user
        return user

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str | None = None,
        ts: str | None = None,
        thread_ts: str | None = None,
        bot_id: str | None = None,
        subtype: str | None = None,
    ) -> Message:
        """Put a message in the workspace as if someone posted it (no API call)."""
        with self._lock:
            if user and user not in self._users:
                self.add_user(user)
            msg = Message(
                channel=channel,
                ts=ts or self.next_ts(),
                text=text,
                user=user,
                bot_id=bot_id,
                thread_ts=self._parent_ts(channel, thread_ts),
                subtype=subtype,
            )
            self._channels.setdefault(channel, {})[msg.ts] = msg
            self._changed.notify_all()
            return msg

    def next_ts(self) -> str:
        """A fresh message ts, strictly after every other one (``"1700000000.000001"``)."""
        with self._lock:
            self._last_ts = max(self.clock(), self._last_ts + 0.000001)
            return f"{self._last_ts:.6f}"

    # ------------------------------------------------------------------ assertions

    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def thread(self, channel: str, thread_ts: str, *, include_deleted: bool = False) -> list[Message]:
        """The parent (if known) and its replies, oldest first."""
        with self._lock:
            self._expire_due_streams()
            msgs = self._channels.get(channel, {})
            found = [
                m
                for m in msgs.values()
                if (m.ts == thread_ts or m.thread_ts == thread_ts) and (include_deleted or not m.deleted)
            ]
            return sorted(found, key=lambda m: float(m.ts))

    def channel_messages(self, channel: str) -> list[Message]:
        with self._lock:
            self._expire_due_streams()
            return sorted(
                (m for m in self._channels.get(channel, {}).values() if not m.deleted), key=lambda m: float(m.ts)
            )

    def get_message(self, channel: str, ts: str) -> Message | None:
        with self._lock:
            self._expire_due_streams()
            return self._channels.get(channel, {}).get(ts)

    def ephemerals(self, channel: str | None = None) -> list[Message]:
        with self._lock:
            return [m for m in self._ephemerals if channel is None or m.channel == channel]

    def file(self, file_id: str) -> File:
        with self._lock:
            return self._files[file_id]

    def status(self, channel: str, thread_ts: str) -> str | None:
        """The assistant status shown now (cleared by a reply or after ``status_ttl``)."""
        with self._lock:
            history = self._statuses.get((channel, thread_ts))
            if not history:
                return None
            at, text = history[-1]
            return text if text and self.clock() - at < self.status_ttl else None

    def status_history(self, channel: str, thread_ts: str) -> list[str]:
        with self._lock:
            return [text for _, text in self._statuses.get((channel, thread_ts), [])]

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Block until ``predicate()`` is truthy; it is re-checked on every fake change."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = predicate()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met within {timeout}s")
                self._changed.wait(min(left, 0.1))

    # ------------------------------------------------------------------ rate report

    def rate_report(self, *, include_rejected: bool = True) -> dict[str, MethodRate]:
        """Per method: calls, peak calls in any sliding minute, per channel too.

        Counts attempts (including ones answered 429) unless ``include_rejected=False``.
        """
        with self._lock:
            calls = [c for c in self._calls if include_rejected or c.status != 429]
        report: dict[str, MethodRate] = {}
        for method in sorted({c.method for c in calls}):
            mine = [c for c in calls if c.method == method]
            times = [c.time for c in mine]
            by_channel: dict[str, list[float]] = {}
            for c in mine:
                if c.channel:
                    by_channel.setdefault(c.channel, []).append(c.time)
            spec = self.methods.get(method)
            span_minutes = max((max(times) - min(times)) / 60.0, 1.0)
            report[method] = MethodRate(
                method=method,
                tier=spec.tier if spec else "",
                limit_per_minute=spec.per_minute(self.tier_limits) if spec else None,
                calls=len(mine),
                peak_per_minute=_sliding_peak(times, 60.0),
                peak_per_minute_by_channel={ch: _sliding_peak(t, 60.0) for ch, t in by_channel.items()},
                peak_per_second_by_channel={ch: _sliding_peak(t, 1.0) for ch, t in by_channel.items()},
                calls_per_minute=len(mine) / span_minutes,
            )
        return report

    def tier_violations(self) -> list[str]:
        """Human-readable breaches of Slack's tiers by the calls made so far."""
        problems = []
        for method, rate in self.rate_report().items():
            if method == "chat.postMessage":
                for channel, peak in rate.peak_per_minute_by_channel.items():
                    if peak > self.post_message_per_minute:
                        problems.append(f"chat.postMessage: {peak}/min in {channel} > {self.post_message_per_minute}")
                for channel, peak in rate.peak_per_second_by_channel.items():
                    if peak > self.post_message_burst:
                        problems.append(f"chat.postMessage: {peak}/s in {channel} > burst {self.post_message_burst}")
            elif rate.limit_per_minute is not None and rate.peak_per_minute > rate.limit_per_minute:
                problems.append(f"{method} ({rate.tier}): {rate.peak_per_minute}/min > {rate.limit_per_minute}")
        return problems

    # ------------------------------------------------------------------ Socket Mode

    @property
    def connection_ids(self) -> list[int]:
        """Serial numbers of the open Socket Mode connections, in connection order."""
        with self._lock:
            return [s.serial for s in self._sockets]

    def wait_connections(self, count: int, timeout: float = 5.0) -> list[int]:
        return self.wait_until(lambda: len(self._sockets) >= count and self.connection_ids, timeout)

    def push_event(
        self,
        event: JSON,
        retry_attempt: int = 0,
        retry_reason: str | None = None,
        *,
        to: int | None = None,
        event_id: str | None = None,
        record: bool = True,
    ) -> Envelope:
        """Send an ``events_api`` envelope to every connection, or to the ``to``-th one.

        Slack sends ``retry_reason: ""`` on a first delivery, so None becomes "".
        The event's message also lands in the workspace (``record``), since Slack
        only tells apps about messages it stored.
        """
        payload = self.event_callback(event, event_id=event_id)
        if record:
            self.record_event(event)
        body = {
            "envelope_id": str(uuid.uuid4()),
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason or "",
            "payload": payload,
        }
        return self._push(body, to)

    def redeliver(self, envelope: Envelope, retry_reason: str = "timeout", *, to: int | None = None) -> Envelope:
        """Slack's retry: same payload and event_id, new envelope, retry_attempt + 1."""
        body = dict(envelope.body)
        body["envelope_id"] = str(uuid.uuid4())
        body["retry_attempt"] = int(envelope.body.get("retry_attempt", 0)) + 1
        body["retry_reason"] = retry_reason
        return self._push(body, to)

    def push_interactive(
        self, payload: JSON, *, to: int | None = None, accepts_response_payload: bool = False
    ) -> Envelope:
        body = {
            "envelope_id": str(uuid.uuid4()),
            "type": "interactive",
            "accepts_response_payload": accepts_response_payload,
            "payload": payload,
        }
        return self._push(body, to)

    def disconnect(self, reason: str = "refresh_requested", *, to: int | None = None) -> None:
        """Slack's ``disconnect`` message: clients should reconnect to a new URL."""
        self._push({"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}}, to)

    def drop(self, to: int = 0) -> None:
        """Close one connection without warning (network blip)."""
        with self._lock:
            sock = self._sockets[to]
        sock.conn.close()

    def wait_ack(self, envelope: Envelope | str, timeout: float = 5.0) -> Ack:
        envelope_id = envelope.envelope_id if isinstance(envelope, Envelope) else envelope
        return self.wait_until(lambda: self._acks.get(envelope_id), timeout)

    def acks(self) -> dict[str, Ack]:
        with self._lock:
            return dict(self._acks)

    def envelopes(self) -> list[Envelope]:
        with self._lock:
            return list(self._envelopes)

    def _push(self, body: JSON, to: int | None) -> Envelope:
        with self._lock:
            targets = list(self._sockets) if to is None else [self._sockets[to]]
        if not targets:
            raise RuntimeError("no Socket Mode connection to push to (call wait_connections first)")
        text = json.dumps(body)
        for sock in targets:
            sock.conn.send(text)
        envelope = Envelope(body.get("envelope_id", ""), body["type"], body, tuple(s.serial for s in targets))
        with self._lock:
            self._envelopes.append(envelope)
        return envelope

    def _ws_check_ticket(self, conn: ServerConnection, request: Any) -> Any:
        parts = urlsplit(request.path)
        ticket = parse_qs(parts.query).get("ticket", [""])[0]
        with self._lock:
            valid = parts.path == "/link/" and ticket in self._tickets
            self._tickets.discard(ticket)  # single use: reconnects must call apps.connections.open
        if not valid:
            return conn.respond(http.HTTPStatus.UNAUTHORIZED, "invalid or used ticket\n")
        return None

    def _ws_session(self, conn: ServerConnection) -> None:
        sock = _Socket(next(self._socket_serial), conn, self.clock())
        with self._lock:
            self._sockets.append(sock)
            count = len(self._sockets)
        try:
            conn.send(
                json.dumps(
                    {
                        "type": "hello",
                        "num_connections": count,
                        "debug_info": {"host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060},
                        "connection_info": {"app_id": self.app_id},
                    }
                )
            )
            with self._lock:
                self._changed.notify_all()
            for raw in conn:
                self._on_client_frame(sock, raw if isinstance(raw, str) else raw.decode())
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._sockets.remove(sock)
                self._changed.notify_all()

    def _on_client_frame(self, sock: _Socket, raw: str) -> None:
        with self._lock:
            sock.received.append(raw)
            self.client_messages.append((sock.serial, raw))
            try:
                message = json.loads(raw)
            except ValueError:
                message = None
            if isinstance(message, dict) and "envelope_id" in message:
                envelope_id = message["envelope_id"]
                # Slack keeps the first ack; a second one is a client bug we keep visible.
                if envelope_id not in self._acks:
                    self._acks[envelope_id] = Ack(envelope_id, message.get("payload"), self.clock(), sock.serial)
            self._changed.notify_all()

    # ------------------------------------------------------------------ event builders

    def event_callback(self, event: JSON, *, event_id: str | None = None) -> JSON:
        """The outer Events API payload (same in Socket Mode and over HTTP)."""
        ts = event.get("event_ts") or event.get("ts")
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or _random_id("Ev", 10),
            "event_time": int(float(ts)) if ts else int(self.clock()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": "4-" + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("="),
        }

    def _message_base(self, channel: str, ts: str | None) -> JSON:
        # Start from the documented sample so new fixture fields show up here too.
        base = dict(self.event_samples["message"]["example"])
        ts = ts or self.next_ts()
        base.update({"channel": channel, "ts": ts, "event_ts": ts, "channel_type": _channel_type(channel)})
        return base

    def _rich_text(self, text: str) -> list[JSON]:
        elements: list[JSON] = []
        for piece in re.split(r"(<@[UW][A-Z0-9]+>)", text):
            if not piece:
                continue
            mention = re.fullmatch(r"<@([UW][A-Z0-9]+)>", piece)
            elements.append({"type": "user", "user_id": mention[1]} if mention else {"type": "text", "text": piece})
        return [
            {
                "type": "rich_text",
                "block_id": _random_id("", 5),
                "elements": [{"type": "rich_text_section", "elements": elements}],
            }
        ]

    def app_mention(
        self, user: str, channel: str, text: str, ts: str | None = None, thread_ts: str | None = None
    ) -> JSON:
        """An ``app_mention`` event; ``<@bot>`` is prepended when ``text`` lacks it."""
        assert "app_mention" in self.event_samples
        mention = f"<@{self.bot_user_id}>"
        if mention not in text:
            text = f"{mention} {text}"
        event = self._message_base(channel, ts)
        event.pop("channel_type")  # app_mention carries no channel_type
        event.update(
            {
                "type": "app_mention",
                "client_msg_id": str(uuid.uuid4()),
                "user": user,
                "text": text,
                "team": self.team_id,
                "blocks": self._rich_text(text),
            }
        )
        if thread_ts:
            event["thread_ts"] = thread_ts
            event["parent_user_id"] = self._parent_user(channel, thread_ts)
        return event

    def message(
        self,
        user: str,
        channel: str,
        text: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        *,
        bot_id: str | None = None,
        subtype: str | None = None,
    ) -> JSON:
        """A ``message`` event: channel message, thread reply, DM (``D...`` channel),
        a bot's message (``bot_id``; modern apps' messages have NO subtype) or any subtype."""
        event = self._message_base(channel, ts)
        event.update({"type": "message", "user": user, "text": text, "team": self.team_id})
        if bot_id:
            event.update({"bot_id": bot_id, "app_id": self.app_id if bot_id == self.bot_id else "A0OTHERAPP1"})
            event["bot_profile"] = {"id": bot_id, "name": self.bot_name, "app_id": event["app_id"], "deleted": False}
        else:
            event.update({"client_msg_id": str(uuid.uuid4()), "blocks": self._rich_text(text)})
        if subtype:
            event["subtype"] = subtype
        if thread_ts:
            event["thread_ts"] = thread_ts
            event["parent_user_id"] = self._parent_user(channel, thread_ts)
        return event

    def dm(
        self, user: str, text: str, ts: str | None = None, thread_ts: str | None = None, *, channel: str = "D0FAKEDM001"
    ) -> JSON:
        return self.message(user, channel, text, ts, thread_ts)

    def bot_message(
        self, channel: str, text: str, ts: str | None = None, thread_ts: str | None = None, *, bot_id: str | None = None
    ) -> JSON:
        """A message from a bot; by default our own bot, as Slack echoes it back."""
        bot_id = bot_id or self.bot_id
        user = self.bot_user_id if bot_id == self.bot_id else "U0OTHERBOT1"
        return self.message(user, channel, text, ts, thread_ts, bot_id=bot_id)

    def message_changed(
        self, user: str, channel: str, ts: str, text: str, previous_text: str, *, thread_ts: str | None = None
    ) -> JSON:
        """An edit: ``subtype: message_changed`` with the new and previous message."""
        event = self._message_base(channel, None)  # its own ts; the edited one is inside
        edited = {"type": "message", "user": user, "text": text, "ts": ts, "team": self.team_id,
                  "edited": {"user": user, "ts": event["ts"]}, "blocks": self._rich_text(text)}  # fmt: skip
        previous = {"type": "message", "user": user, "text": previous_text, "ts": ts, "team": self.team_id}
        if thread_ts:
            edited["thread_ts"] = previous["thread_ts"] = thread_ts
        event.pop("user", None)
        event.pop("text", None)
        event.update({"type": "message", "subtype": "message_changed", "hidden": True,
                      "message": edited, "previous_message": previous})  # fmt: skip
        return event

    def channel_join(self, user: str, channel: str, *, inviter: str | None = None) -> JSON:
        event = self.message(user, channel, f"<@{user}> has joined the channel", subtype="channel_join")
        for key in ("client_msg_id", "blocks"):
            event.pop(key, None)
        if inviter:
            event["inviter"] = inviter
        return event

    def block_actions(
        self,
        user: str,
        channel: str,
        message_ts: str,
        action_id: str,
        value: str | None = None,
        *,
        block_id: str | None = None,
        text: str = "Cancel",
    ) -> JSON:
        """A ``block_actions`` payload for a button click on a message we hold."""
        msg = self.get_message(channel, message_ts)
        response_id = uuid.uuid4().hex
        action: JSON = {
            "action_id": action_id,
            "block_id": block_id or _random_id("", 5),
            "text": {"type": "plain_text", "text": text, "emoji": True},
            "type": "button",
            "action_ts": self.next_ts(),
        }
        if value is not None:
            action["value"] = value
        container: JSON = {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False}
        if msg and msg.thread_ts:
            container["thread_ts"] = msg.thread_ts
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": self.team_id},
            "api_app_id": self.app_id,
            "token": self.verification_token,
            "container": container,
            "trigger_id": f"{secrets.randbelow(10**10)}.{secrets.randbelow(10**10)}.{secrets.token_hex(16)}",
            "team": {"id": self.team_id, "domain": "fake"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": "fake-channel"},
            "message": msg.to_api(self.team_id) if msg else {"type": "message", "ts": message_ts, "text": ""},
            "state": {"values": {}},
            "response_url": f"{self.base_url}actions/{response_id}",
            "actions": [action],
        }

    def _interaction_base(self, kind: str, user: str) -> JSON:
        return {
            "type": kind,
            "token": self.verification_token,
            "team": {"id": self.team_id, "domain": "fake"},
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": self.team_id},
            "api_app_id": self.app_id,
            "is_enterprise_install": False,
            "enterprise": None,
        }

    def trigger(self) -> str:
        """A fresh trigger_id, good for one views.open within ``trigger_ttl``."""
        trigger_id = f"{secrets.randbelow(10**10)}.{secrets.randbelow(10**10)}.{secrets.token_hex(16)}"
        with self._lock:
            self._triggers[trigger_id] = self.clock()
        return trigger_id

    def response_url(self) -> str:
        return f"{self.base_url}actions/{uuid.uuid4().hex}"

    def slash_command(self, user: str, channel: str, text: str, *, command: str = "/askbox") -> JSON:
        """A slash command's payload (form fields over HTTP, the payload in Socket Mode)."""
        return {
            "token": self.verification_token, "team_id": self.team_id, "team_domain": "fake",
            "channel_id": channel, "channel_name": "fake-channel", "user_id": user, "user_name": user.lower(),
            "command": command, "text": text, "api_app_id": self.app_id, "is_enterprise_install": "false",
            "response_url": self.response_url(), "trigger_id": self.trigger(),
        }  # fmt: skip

    def message_shortcut(self, user: str, channel: str, message_ts: str, callback_id: str) -> JSON:
        """A message shortcut ("message_action") on a message the workspace holds."""
        msg = self.get_message(channel, message_ts)
        assert msg is not None, f"no message {message_ts} in {channel}"
        return {
            **self._interaction_base("message_action", user),
            "callback_id": callback_id, "trigger_id": self.trigger(), "response_url": self.response_url(),
            "action_ts": self.next_ts(), "channel": {"id": channel, "name": "fake-channel"},
            "message_ts": message_ts, "message": msg.to_api(self.team_id),
        }  # fmt: skip

    def opened_views(self) -> list[JSON]:
        with self._lock:
            return list(self._views.values())

    def view_submission(self, user: str, view: JSON, values: dict[str, dict[str, JSON]]) -> JSON:
        """The submission of a modal opened with views.open; ``values`` is ``state.values``
        (block id -> action id -> the element's state, e.g. ``{"type": "plain_text_input", "value": ...}``)."""
        return {
            **self._interaction_base("view_submission", user),
            "trigger_id": self.trigger(), "response_urls": [],
            "view": {**view, "state": {"values": values}},
        }  # fmt: skip

    def select_action(self, user: str, ephemeral: Message, action_id: str, value: str) -> JSON:
        """A pick in a static select of an ephemeral message (only its user sees it)."""
        element = next(
            e
            for b in ephemeral.blocks or []
            if b.get("type") == "actions"
            for e in b["elements"]
            if e.get("action_id") == action_id
        )
        option = (
            next(o for o in element["options"] if o["value"] == value)
            if any(o["value"] == value for o in element["options"])
            else {"text": {"type": "plain_text", "text": value}, "value": value}
        )
        container = {
            "type": "message",
            "message_ts": ephemeral.ts,
            "channel_id": ephemeral.channel,
            "is_ephemeral": True,
            "thread_ts": ephemeral.thread_ts,
        }
        return {
            **self._interaction_base("block_actions", user),
            "container": container, "trigger_id": self.trigger(), "response_url": self.response_url(),
            "channel": {"id": ephemeral.channel, "name": "fake-channel"}, "state": {"values": {}},
            "actions": [{"type": "static_select", "action_id": action_id, "block_id": _random_id("", 5),
                         "selected_option": option, "action_ts": self.next_ts()}],
        }  # fmt: skip

    def feedback_click(self, user: str, channel: str, message_ts: str, positive: bool) -> JSON:
        """A click on the feedback buttons element of a message we hold."""
        msg = self.get_message(channel, message_ts)
        assert msg is not None and msg.blocks, f"no message with blocks at {message_ts}"
        element = next(
            e
            for b in msg.blocks
            if b.get("type") == "context_actions"
            for e in b["elements"]
            if e.get("type") == "feedback_buttons"
        )
        button = element["positive_button" if positive else "negative_button"]
        payload = self.block_actions(user, channel, message_ts, element["action_id"], button["value"])
        payload["actions"][0].update(type="feedback_buttons", text=button["text"])
        return payload

    def app_home_opened(self, user: str, tab: str, *, channel: str = "D0FAKEHOME1") -> JSON:
        return {
            "type": "app_home_opened",
            "user": user,
            "channel": channel,
            "tab": tab,
            "event_ts": self.next_ts(),
            **({"view": self.home_views[user]} if user in self.home_views else {}),
        }

    def agent_session_stopped(self, user: str, channel: str, thread_ts: str) -> JSON:
        """Slack's stop button on the thread's agent session (the fixture's example, filled in)."""
        event = dict(self.event_samples["agent_session_stopped"]["example"])
        streams = [m.ts for m in self.thread(channel, thread_ts) if m.streaming]
        with self._lock:
            for ts in streams:  # Slack stops the app's streams itself
                self._channels[channel][ts].stream = "stopped"
        event.update(
            channel=channel, user=user, thread_ts=thread_ts, streaming_message_ts=streams, event_ts=self.next_ts()
        )
        return event

    def push_slash_command(self, payload: JSON, *, to: int | None = None) -> Envelope:
        body = {
            "envelope_id": str(uuid.uuid4()),
            "type": "slash_commands",
            "accepts_response_payload": True,
            "payload": payload,
        }
        return self._push(body, to)

    def session_status(self, channel: str, thread_ts: str) -> str | None:
        with self._lock:
            history = self.sessions.get((channel, thread_ts))
            return history[-1][1] if history else None

    def session_history(self, channel: str, thread_ts: str) -> list[tuple[str, str]]:
        """(status, title) of every change of the thread's agent session, oldest first."""
        with self._lock:
            return [(status, title) for _, status, title in self.sessions.get((channel, thread_ts), [])]

    def deliver_form(self, url: str, fields: JSON, signing_secret: str) -> tuple[int, str]:
        """POST a slash command (form fields) or an interaction (``payload=<json>``) like Slack."""
        if urlsplit(url).hostname not in {"127.0.0.1", "localhost"}:
            raise ValueError("the fake only talks to loopback")
        from urllib.parse import urlencode

        body = urlencode(fields)
        headers = signed_request(body, signing_secret)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def deliver_http(
        self,
        url: str,
        payload: JSON,
        signing_secret: str,
        *,
        timestamp: int | None = None,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        signed: bool = True,
        record: bool = True,
    ) -> tuple[int, str]:
        """POST an event_callback (or any payload) to an app's ``/slack/events`` like Slack.

        Returns (HTTP status, body). The event's message lands in the workspace first.
        """
        if urlsplit(url).hostname not in {"127.0.0.1", "localhost"}:
            raise ValueError("the fake only talks to loopback")
        if record and payload.get("type") == "event_callback":
            self.record_event(payload["event"])
        body = json.dumps(payload)
        headers = signed_request(body, signing_secret, timestamp) if signed else {"Content-Type": "application/json"}
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
        request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        try:
            with opener.open(request, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def _parent_user(self, channel: str, thread_ts: str) -> str | None:
        parent = self.get_message(channel, thread_ts)
        return parent.user if parent else None

    def record_event(self, event: JSON) -> None:
        """Make the workspace agree with an event: its message exists, an edit applies."""
        channel = event.get("channel")
        if not channel or event.get("type") not in {"message", "app_mention"}:
            return
        with self._lock:
            subtype = event.get("subtype")
            if subtype == "message_changed":
                inner = event["message"]
                msg = self._channels.get(channel, {}).get(inner["ts"])
                if msg:
                    msg.history.append(msg.text)
                    msg.text, msg.edits = inner.get("text", ""), msg.edits + 1
            elif subtype not in {"message_deleted"} and event["ts"] not in self._channels.get(channel, {}):
                self.add_message(
                    channel,
                    event.get("text", ""),
                    user=event.get("user"),
                    ts=event["ts"],
                    thread_ts=event.get("thread_ts"),
                    bot_id=event.get("bot_id"),
                    subtype=subtype,
                )
            self._changed.notify_all()

    # ------------------------------------------------------------------ HTTP entry points

    def _handle_http(self, verb: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(path)
        if parts.path.startswith("/api/"):
            status, extra, answer = self._handle_api(parts.path[len("/api/") :], verb, headers, parts.query, body)
            if status == RESET:
                return RESET, {}, b""
            return status, {"Content-Type": "application/json; charset=utf-8", **extra}, json.dumps(answer).encode()
        if parts.path.startswith("/upload/v1/") and verb == "POST":
            return self._handle_upload(parts.path.rsplit("/", 1)[-1], body)
        if parts.path.startswith("/actions/") and verb == "POST":
            text = body.decode("utf-8", "replace")
            try:
                recorded: JSON | str = json.loads(text)
            except ValueError:
                recorded = text
            with self._lock:
                self.responses.append((parts.path.rsplit("/", 1)[-1], recorded))
                self._changed.notify_all()
            return 200, {"Content-Type": "text/plain"}, b"ok"
        return 404, {"Content-Type": "text/plain"}, b"not found"

    def _handle_upload(self, file_id: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            file = self._files.get(file_id)
            if file is None:
                return 404, {"Content-Type": "text/plain"}, b"unknown upload"
            file.content = body
            self._changed.notify_all()
        return 200, {"Content-Type": "text/plain; charset=utf-8"}, f"OK - {len(body)}".encode()

    def _handle_api(
        self, name: str, verb: str, headers: Any, query: str, body: bytes
    ) -> tuple[int, dict[str, str], JSON]:
        if self.latency:
            time.sleep(self.latency)  # outside the lock: calls overlap as they do at Slack
        args, encoding, body_token, parse_error = _parse_request(headers, query, body)
        header_token = _bearer(headers.get("Authorization"))
        token = header_token or body_token
        with self._lock:
            now = self.clock()

            def answer(
                status: int, response: JSON, extra: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], JSON]:
                if token == self.bot_token:  # Slack names the token's scopes on every answer
                    extra = {"X-OAuth-Scopes": ",".join(self.scopes), **(extra or {})}
                self._calls.append(Call(name, args, token, encoding, now, status, response, dict(extra or {})))
                self._changed.notify_all()
                return status, dict(extra or {}), response

            spec = self.methods.get(name)
            if spec is None:
                return answer(200, {"ok": False, "error": "unknown_method", "req_method": name})
            if self._rate_limits.get(name):
                retry_after = self._rate_limits[name].popleft()
                return answer(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)})
            server_error = self._server_errors[name].popleft() if self._server_errors.get(name) else None
            reset = self._next_reset(name, args)
            if reset is not None:
                server_error = (RESET, reset)
            if server_error is not None and not server_error[1]:
                if server_error[0] == RESET:
                    return answer(RESET, {})
                return answer(server_error[0], {"ok": False, "error": "internal_error"})
            auth_error = self._auth_error(name, token)
            if auth_error:
                return answer(200, {"ok": False, "error": auth_error})
            if self.enforce_tiers:
                retry_after = self._tier_retry_after(spec, args, now)
                if retry_after:
                    return answer(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)})
            scripted = self._next_failure(name, args)
            if scripted:
                self._admit(spec, args, now)
                return answer(200, {"ok": False, "error": scripted})
            try:
                if parse_error:
                    raise _SlackError(parse_error)
                if encoding == "json" and not spec.json_ok:
                    # Slack reads only form fields for these methods: the JSON body is lost.
                    dropped = sorted(args)
                    effective: JSON = {}
                    self._validate(
                        spec, effective, form=True, note=f"{name} does not accept JSON bodies (ignored: {dropped})"
                    )
                else:
                    effective = args
                    self._validate(spec, effective, form=encoding != "json")
                response = {"ok": True, **self._dispatch(name, effective, token, now)}
            except _SlackError as err:
                response = {"ok": False, "error": err.error, **err.extra}
                if err.messages:
                    response["response_metadata"] = {"messages": [f"[ERROR] {m}" for m in err.messages]}
            if encoding == "json" and "charset" not in (headers.get("Content-Type") or ""):
                response.setdefault("warning", "missing_charset")
            self._admit(spec, args, now)
            if server_error is not None:  # after_effect: done, and yet a 5xx (or no answer at all)
                if server_error[0] == RESET:
                    return answer(RESET, response)
                return answer(server_error[0], {"ok": False, "error": "internal_error"})
            return answer(200, response)

    def _auth_error(self, method: str, token: str | None) -> str | None:
        if not token:
            return "not_authed"
        if token not in {self.bot_token, self.app_token}:
            return "invalid_auth"
        if method == "apps.connections.open":
            return None if token == self.app_token else "not_allowed_token_type"
        if token == self.app_token and method != "auth.test":
            return "not_allowed_token_type"
        return None

    def _next_reset(self, method: str, args: JSON) -> bool | None:
        """``after_effect`` of the next scripted reset matching this call, or None."""
        queue = self._resets.get(method)
        for i, (after_effect, when) in enumerate(queue or ()):
            if when is None or when(args):
                del queue[i]  # type: ignore[union-attr]
                return after_effect
        return None

    def _next_failure(self, method: str, args: JSON) -> str | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        for i, (error, when) in enumerate(queue):
            if when is None or when(args):
                del queue[i]
                return error
        return None

    def _tier_keys(self, spec: MethodSpec, args: JSON) -> list[tuple[tuple[str, str | None], float, int]]:
        """(window key, window seconds, max calls) that apply to this call."""
        if spec.name == "chat.postMessage":
            key = (spec.name, args.get("channel"))
            return [
                (key, 60.0, self.post_message_per_minute),
                ((spec.name + "/s", args.get("channel")), 1.0, self.post_message_burst),
            ]
        limit = spec.per_minute(self.tier_limits)
        return [] if limit is None else [((spec.name, None), 60.0, limit)]

    def _tier_retry_after(self, spec: MethodSpec, args: JSON, now: float) -> int:
        wait = 0.0
        for key, window, limit in self._tier_keys(spec, args):
            times = self._admitted.get(key, deque())
            while times and times[0] <= now - window:
                times.popleft()
            if len(times) >= limit:
                wait = max(wait, times[0] + window - now)
        return max(1, math.ceil(wait)) if wait > 0 else 0

    def _admit(self, spec: MethodSpec, args: JSON, now: float) -> None:
        for key, _, _ in self._tier_keys(spec, args):
            self._admitted.setdefault(key, deque()).append(now)

    # ------------------------------------------------------------------ validation

    def _spec(self, method: str) -> MethodSpec:
        if method not in self.methods:
            raise ValueError(f"unknown method {method!r}; the fake knows {sorted(self.methods)}")
        return self.methods[method]

    def _validate(self, spec: MethodSpec, args: JSON, *, form: bool, note: str | None = None) -> None:
        problems = [
            f"missing required field: {name}"
            for name in spec.required
            if name != "token" and (args.get(name) is None or args.get(name) == "")
        ]
        if spec.name == "chat.appendStream" and "markdown_text" not in args and args.get("chunks"):
            # The fixture requires markdown_text, but Slack accepts chunks instead and
            # slack_sdk's ChatStream sends only chunks.
            problems.remove("missing required field: markdown_text")
        for name, value in args.items():
            prop = spec.properties.get(name)
            if prop is not None:
                problem = _type_problem(name, prop, value, form)
                if problem:
                    problems.append(problem)
        if problems:
            raise _SlackError("invalid_arguments", *problems, *([note] if note else []))

    # ------------------------------------------------------------------ method handlers

    def _dispatch(self, name: str, args: JSON, token: str | None, now: float) -> JSON:
        self._expire_due_streams()
        if name in _TEXT_LIMITED_METHODS:
            self._check_text_limits(name, args)
        handler = getattr(self, "_api_" + name.replace(".", "_"))
        return handler(args, token, now)

    def _check_text_limits(self, name: str, args: JSON) -> None:
        for field_name, limit in _TEXT_LIMITS.items():
            value = args.get(field_name)
            if isinstance(value, str) and len(value) > limit:
                raise _SlackError("msg_too_long", f"{field_name} is {len(value)} characters, limit {limit}")
        streamed = sum(len(c.get("text", "")) for c in _chunks(args) if c.get("type") == "markdown_text")
        if streamed > _TEXT_LIMITS["markdown_text"]:
            # Undocumented; a markdown_text chunk is the same text as markdown_text.
            raise _SlackError("msg_too_long", f"markdown_text chunks hold {streamed} characters, limit 12000")

    def _channel(self, channel: Any) -> dict[str, Message]:
        if not isinstance(channel, str) or not _CHANNEL_ID.match(channel):
            raise _SlackError("channel_not_found")
        return self._channels.setdefault(channel, {})

    def _parent_ts(self, channel: str, thread_ts: str | None) -> str | None:
        """Replies to a reply land in the parent's thread, as in Slack."""
        if not thread_ts:
            return None
        parent = self._channels.get(channel, {}).get(thread_ts)
        if parent is not None and parent.thread_ts:
            return parent.thread_ts
        return thread_ts

    def _find(self, channel: str, ts: Any, error: str = "message_not_found") -> Message:
        msg = self._channel(channel).get(str(ts))
        if msg is None or msg.deleted:
            raise _SlackError(error)
        return msg

    def _bot_message(self, channel: str, args: JSON, now: float) -> Message:
        self._channel(channel)
        return Message(
            channel=channel,
            ts=self.next_ts(),
            user=self.bot_user_id,
            bot_id=self.bot_id,
            app_id=self.app_id,
            thread_ts=self._parent_ts(channel, args.get("thread_ts")),
        )

    def _store(self, msg: Message) -> None:
        self._channels.setdefault(msg.channel, {})[msg.ts] = msg
        if msg.thread_ts:
            # Slack clears the "is thinking..." status when the app replies in the thread.
            history = self._statuses.get((msg.channel, msg.thread_ts))
            if history and history[-1][1]:
                history.append((self.clock(), ""))

    def _set_content(self, name: str, msg: Message, args: JSON, *, require: bool = True) -> None:
        text, markdown = args.get("text"), args.get("markdown_text")
        blocks = _blocks(args.get("blocks"))
        attachments = _json_list(args.get("attachments"), "invalid_attachments")
        if markdown is not None and (text is not None or blocks is not None):
            raise _SlackError("markdown_text_conflict")
        if require and not (text or markdown or blocks or attachments or args.get("file_ids")):
            raise _SlackError("no_text")
        if markdown is not None:
            msg.text, msg.markdown, msg.blocks = markdown, True, None
        else:
            msg.text = text if text is not None else msg.text if name == "chat.update" else ""
            msg.markdown = False
        if blocks is not None:
            msg.blocks = blocks
        if attachments is not None:
            msg.attachments = attachments
        if args.get("metadata") is not None:
            msg.metadata = _maybe_json(args["metadata"])

    def _api_auth_test(self, args: JSON, token: str | None, now: float) -> JSON:
        out = {
            "url": "https://fake.slack.com/",
            "team": self.team_name,
            "team_id": self.team_id,
            "is_enterprise_install": False,
        }
        if token == self.app_token:
            return {**out, "app_id": self.app_id}
        return {**out, "user": self.bot_name, "user_id": self.bot_user_id, "bot_id": self.bot_id, "app_id": self.app_id}

    def _api_apps_connections_open(self, args: JSON, token: str | None, now: float) -> JSON:
        ticket = str(uuid.uuid4())
        self._tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self.ws_port}/link/?ticket={ticket}&app_id={self.app_id}"}

    def _api_chat_postMessage(self, args: JSON, token: str | None, now: float) -> JSON:
        channel = args["channel"]
        msg = self._bot_message(channel, args, now)
        self._set_content("chat.postMessage", msg, args)
        self._store(msg)
        return {"channel": channel, "ts": msg.ts, "message": msg.to_api(self.team_id)}

    def _api_chat_postEphemeral(self, args: JSON, token: str | None, now: float) -> JSON:
        channel, user = args["channel"], args["user"]
        if user not in self._users:
            raise _SlackError("user_not_in_channel")
        msg = self._bot_message(channel, args, now)
        self._set_content("chat.postEphemeral", msg, args)
        msg.ephemeral_to = user
        self._ephemerals.append(msg)
        return {"message_ts": msg.ts}

    def _api_chat_update(self, args: JSON, token: str | None, now: float) -> JSON:
        msg = self._find(args["channel"], args["ts"])
        if msg.user != self.bot_user_id:
            raise _SlackError("cant_update_message")
        if msg.streaming:
            raise _SlackError("streaming_state_conflict")
        before = msg.text
        self._set_content("chat.update", msg, args)
        msg.history.append(before)
        msg.edits += 1
        return {"channel": msg.channel, "ts": msg.ts, "text": msg.text, "message": msg.to_api(self.team_id)}

    def _api_chat_delete(self, args: JSON, token: str | None, now: float) -> JSON:
        msg = self._find(args["channel"], args["ts"])
        if msg.user != self.bot_user_id:
            raise _SlackError("cant_delete_message")
        msg.deleted = True
        return {"channel": msg.channel, "ts": msg.ts}

    def _api_chat_startStream(self, args: JSON, token: str | None, now: float) -> JSON:
        channel = args["channel"]
        self._channel(channel)
        if channel[0] in "CG":
            # Slack's answers when streaming outside a DM without a recipient
            # (fixture errors list + public reports of these exact codes).
            if not args.get("recipient_team_id"):
                raise _SlackError(
                    "missing_recipient_team_id", "recipient_team_id is required when streaming to a channel"
                )
            if not args.get("recipient_user_id"):
                raise _SlackError(
                    "missing_recipient_user_id", "recipient_user_id is required when streaming to a channel"
                )
        recipient = args.get("recipient_user_id")
        if recipient and recipient not in self._users:
            raise _SlackError("user_not_found")
        msg = self._bot_message(channel, args, now)
        msg.stream, msg.stream_started, msg.markdown = "streaming", now, True
        self._stream_text(msg, args)
        self._store(msg)
        return {"channel": channel, "ts": msg.ts}

    def _streaming_message(self, args: JSON) -> Message:
        msg = self._find(args["channel"], args["ts"])
        if msg.user != self.bot_user_id:
            raise _SlackError("message_not_owned_by_app")
        if not msg.streaming:
            raise _SlackError("message_not_in_streaming_state")
        return msg

    def _api_chat_appendStream(self, args: JSON, token: str | None, now: float) -> JSON:
        msg = self._streaming_message(args)
        self._stream_text(msg, args)
        return {"channel": msg.channel, "ts": msg.ts}

    def _api_chat_stopStream(self, args: JSON, token: str | None, now: float) -> JSON:
        msg = self._streaming_message(args)
        self._stream_text(msg, args)
        blocks = _blocks(args.get("blocks"))
        if blocks is not None:
            msg.blocks = blocks
        if args.get("metadata") is not None:
            msg.metadata = _maybe_json(args["metadata"])
        if args.get("session_status") is not None:
            # Not in the fixture (August 2026); Slack's agent_session_stopped reference and
            # slack_sdk 3.48 send it. The same values as agents.sessions.setStatus.
            status = str(args["session_status"])
            if status not in {"active", "processing", "suspended", "closed"}:
                raise _SlackError("invalid_arguments", f"session_status {status!r}")
            if msg.thread_ts:
                history = self.sessions.setdefault((msg.channel, msg.thread_ts), [])
                history.append((now, status, history[-1][2] if history else ""))
        msg.stream = "stopped"
        return {"channel": msg.channel, "ts": msg.ts, "message": msg.to_api(self.team_id)}

    def _stream_text(self, msg: Message, args: JSON) -> None:
        """markdown_text and markdown_text chunks grow the text; other chunks are kept."""
        chunks = _chunks(args)
        for chunk in chunks:
            if not isinstance(chunk, dict) or chunk.get("type") not in _CHUNK_TYPES:
                raise _SlackError("invalid_chunks", f"unknown chunk: {chunk!r}")
            if chunk["type"] == "markdown_text" and not isinstance(chunk.get("text"), str):
                raise _SlackError("invalid_chunks", "markdown_text chunk needs a text string")
        if isinstance(args.get("markdown_text"), str):
            msg.text += args["markdown_text"]
        for chunk in chunks:
            msg.chunks.append(chunk)
            if chunk["type"] == "markdown_text":
                msg.text += chunk["text"]

    def _expire_due_streams(self) -> None:
        now = self.clock()
        for msg in self._all_messages():
            if msg.streaming and msg.stream_started is not None and now - msg.stream_started >= self.stream_ttl:
                msg.stream = "expired"

    def _all_messages(self) -> Iterator[Message]:
        for msgs in self._channels.values():
            yield from msgs.values()

    def _api_reactions_add(self, args: JSON, token: str | None, now: float) -> JSON:
        name = str(args["name"])
        if not _EMOJI_NAME.match(name):
            raise _SlackError("invalid_name")
        msg = self._find(args["channel"], args["timestamp"])
        users = msg.reactions.setdefault(name, [])
        if self.bot_user_id in users:
            raise _SlackError("already_reacted")
        users.append(self.bot_user_id)
        return {}

    def _api_reactions_remove(self, args: JSON, token: str | None, now: float) -> JSON:
        if (
            not (args.get("channel") and args.get("timestamp"))
            and not args.get("file")
            and not args.get("file_comment")
        ):
            raise _SlackError("no_item_specified")
        if not args.get("channel"):
            raise _SlackError("file_not_found")
        msg = self._find(args["channel"], args["timestamp"])
        users = msg.reactions.get(str(args["name"]), [])
        if self.bot_user_id not in users:
            raise _SlackError("no_reaction")
        users.remove(self.bot_user_id)
        if not users:
            del msg.reactions[str(args["name"])]
        return {}

    def _api_assistant_threads_setStatus(self, args: JSON, token: str | None, now: float) -> JSON:
        channel = args["channel_id"]
        msgs = self._channel(channel)
        if str(args["thread_ts"]) not in msgs:
            raise _SlackError("invalid_thread_ts")
        self._statuses.setdefault((channel, str(args["thread_ts"])), []).append((now, str(args["status"])))
        return {}

    def _api_conversations_replies(self, args: JSON, token: str | None, now: float) -> JSON:
        channel = args["channel"]
        msgs = self._channel(channel)
        anchor = msgs.get(str(args["ts"]))
        if anchor is None or anchor.deleted:
            raise _SlackError("thread_not_found")
        root = anchor.thread_ts or anchor.ts
        thread = self.thread(channel, root)
        parent = [m for m in thread if m.ts == root]
        replies = [m for m in thread if m.ts != root]
        ordered = parent + replies
        oldest = float(args.get("oldest") or 0)
        latest = float(args["latest"]) if args.get("latest") else math.inf
        if _as_bool(args.get("inclusive", False)):
            window = [m for m in ordered if oldest <= float(m.ts) <= latest]
        else:
            window = [m for m in ordered if oldest < float(m.ts) < latest]
        start = 0
        if args.get("cursor"):
            try:
                after = base64.b64decode(str(args["cursor"])).decode().removeprefix("next_ts:")
                start = next(i for i, m in enumerate(window) if m.ts == after)
            except (ValueError, StopIteration):
                raise _SlackError("invalid_cursor") from None
        limit = int(args.get("limit") or 1000)
        page = window[start : start + limit]
        out: JSON = {
            "messages": [m.to_api(self.team_id, replies if m.ts == root else None) for m in page],
            "has_more": start + limit < len(window),
        }
        if out["has_more"]:
            cursor = base64.b64encode(f"next_ts:{window[start + limit].ts}".encode()).decode()
            out["response_metadata"] = {"next_cursor": cursor}
        return out

    def _api_users_info(self, args: JSON, token: str | None, now: float) -> JSON:
        user = self._users.get(str(args["user"]))
        if user is None:
            raise _SlackError("user_not_found")
        return {"user": user}

    def _api_files_getUploadURLExternal(self, args: JSON, token: str | None, now: float) -> JSON:
        length = int(args["length"])
        if length <= 0:
            raise _SlackError("missing_argument", "length must be a positive number of bytes")
        file = File(
            id=_random_id("F", 10),
            name=str(args["filename"]),
            length=length,
            alt_txt=args.get("alt_txt"),
            snippet_type=args.get("snippet_type"),
        )
        self._files[file.id] = file
        return {"upload_url": f"{self.base_url}upload/v1/{file.id}", "file_id": file.id}

    def _api_files_completeUploadExternal(self, args: JSON, token: str | None, now: float) -> JSON:
        entries = _as_list(args["files"])
        if not entries or not all(isinstance(e, dict) and e.get("id") for e in entries):
            raise _SlackError("invalid_arguments", "files must be a JSON array of {id, title}")
        files = []
        for entry in entries:
            file = self._files.get(entry["id"])
            if file is None or not file.uploaded:
                raise _SlackError("file_not_found", f"{entry['id']} was never uploaded")
            if entry.get("title"):
                file.title = entry["title"]
            files.append(file)
        channels = [args["channel_id"]] if args.get("channel_id") else _as_list(args.get("channels")) or []
        if args.get("thread_ts") and len(channels) != 1:
            raise _SlackError("invalid_channel", "thread_ts needs exactly one channel")
        for channel in channels:
            msg = self._bot_message(channel, args, now)
            msg.text = args.get("initial_comment") or ""
            msg.files = files
            self._store(msg)
            for file in files:
                file.shared_in.append((channel, msg.ts))
        return {"files": [f.to_api(self.bot_user_id, int(now)) for f in files]}

    # ------------------------------------------------------------------ agents, views, App Home

    def _session_thread(self, args: JSON) -> tuple[str, str]:
        channel = args["channel_id"]
        msgs = self._channel(channel)
        thread_ts = args.get("thread_ts")
        if not thread_ts:
            raise _SlackError("thread_ts_required")  # every askbox session is a thread's
        if str(thread_ts) not in msgs:
            raise _SlackError("channel_not_found", f"no thread {thread_ts} in {channel}")
        return channel, str(thread_ts)

    def _api_agents_sessions_setStatus(self, args: JSON, token: str | None, now: float) -> JSON:
        status = str(args["status"])
        if status not in {"active", "processing", "suspended", "closed"}:
            raise _SlackError("invalid_status")
        key = self._session_thread(args)
        if args.get("initiator_user_id") and args["initiator_user_id"] not in self._users:
            raise _SlackError("user_not_found")
        history = self.sessions.setdefault(key, [])
        # The title is used only when the session is created (the fixture says so).
        title = history[-1][2] if history else str(args.get("title") or "")
        history.append((now, status, title))
        return {"status": status, "agent_status": status, "title": title}

    def _api_agents_sessions_rename(self, args: JSON, token: str | None, now: float) -> JSON:
        key = self._session_thread(args)
        title = str(args["title"])
        if not 1 <= len(title) <= 200:
            raise _SlackError("invalid_name")
        history = self.sessions.get(key)
        if not history:
            raise _SlackError("session_not_found")
        history.append((now, history[-1][1], title))
        return {"title": title}

    def _api_assistant_threads_setSuggestedPrompts(self, args: JSON, token: str | None, now: float) -> JSON:
        channel = args["channel_id"]
        self._channel(channel)
        if not channel.startswith("D"):
            raise _SlackError("channel_not_found", "suggested prompts are for the app's own DM (its Messages tab)")
        prompts = _maybe_json(args["prompts"])
        if (
            not isinstance(prompts, list)
            or not prompts
            or len(prompts) > 4
            or not all(isinstance(p, dict) and p.get("title") and p.get("message") for p in prompts)
        ):
            raise _SlackError("invalid_arguments", "prompts: 1 to 4 objects with a title and a message")
        self.suggested_prompts[(channel, args.get("thread_ts"))] = {**args, "prompts": prompts}
        return {}

    def _api_chat_getPermalink(self, args: JSON, token: str | None, now: float) -> JSON:
        channel = args["channel"]
        msg = self._find(channel, args["message_ts"])
        link = f"https://fake.slack.com/archives/{channel}/p{msg.ts.replace('.', '')}"
        if msg.thread_ts:
            link += f"?thread_ts={msg.thread_ts}&cid={channel}"
        return {"channel": channel, "permalink": link}

    def _view(self, args: JSON) -> JSON:
        view = _maybe_json(args["view"])
        if not isinstance(view, dict) or view.get("type") not in {"modal", "home"}:
            raise _SlackError("invalid_arguments", "view must be a JSON object of type modal or home")
        problems = list(_block_problems(view.get("blocks") or []))
        if view.get("type") == "modal":
            if not (view.get("title") or {}).get("text"):
                problems.append("a modal needs a title [json-pointer:/view/title]")
            if len(str(view.get("private_metadata") or "")) > 3000:
                problems.append("must be less than 3001 characters [json-pointer:/view/private_metadata]")
            if any(b.get("type") == "input" for b in view.get("blocks") or []) and not view.get("submit"):
                problems.append("a modal with inputs needs a submit button [json-pointer:/view/submit]")
        if len(view.get("blocks") or []) > 100:
            problems.append("no more than 100 items allowed [json-pointer:/view/blocks]")
        if problems:
            raise _SlackError("invalid_arguments", *problems)
        return view

    def _api_views_open(self, args: JSON, token: str | None, now: float) -> JSON:
        trigger_id = args.get("trigger_id")
        if not trigger_id:
            raise _SlackError("invalid_trigger_id")
        issued = self._triggers.pop(str(trigger_id), None)
        if issued is None:
            raise _SlackError("exchanged_trigger_id" if trigger_id in self._used_triggers else "invalid_trigger_id")
        self._used_triggers.add(str(trigger_id))
        if now - issued > self.trigger_ttl:
            raise _SlackError("expired_trigger_id")
        view = {
            **self._view(args),
            "id": _random_id("V", 10),
            "team_id": self.team_id,
            "app_id": self.app_id,
            "hash": uuid.uuid4().hex[:12],
        }
        self._views[view["id"]] = view
        return {"view": view}

    def _api_views_update(self, args: JSON, token: str | None, now: float) -> JSON:
        view_id = str(args.get("view_id") or "")
        if view_id not in self._views:
            raise _SlackError("not_found")
        view = {**self._views[view_id], **self._view(args)}
        self._views[view_id] = view
        return {"view": view}

    def _api_views_publish(self, args: JSON, token: str | None, now: float) -> JSON:
        user = str(args["user_id"])
        if user not in self._users:
            raise _SlackError("user_not_found")
        view = {**self._view(args), "id": _random_id("V", 10), "team_id": self.team_id}
        if view["type"] != "home":
            raise _SlackError("invalid_arguments", "views.publish takes a home view")
        self.home_views[user] = view
        return {"view": view}


# --------------------------------------------------------------------------- parsing


def _bearer(value: str | None) -> str | None:
    if value and value.startswith("Bearer "):
        return value[len("Bearer ") :].strip() or None
    return None


def _parse_request(headers: Any, query: str, body: bytes) -> tuple[JSON, str, str | None, str | None]:
    """(args, encoding, token from the body/query, parse error)."""
    args: JSON = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
    encoding = "query" if args else "none"
    kind = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    error = None
    if body:
        if kind == "application/json":
            encoding = "json"
            try:
                decoded = json.loads(body.decode("utf-8"))
            except ValueError:
                decoded, error = {}, "invalid_json"
            if not isinstance(decoded, dict):
                decoded, error = {}, error or "invalid_json"
            # Slack ignores a token inside JSON: JSON calls must use the header.
            decoded.pop("token", None)
            args.update(decoded)
        elif kind == "multipart/form-data":
            encoding = "multipart"
            args.update(_parse_multipart(headers.get("Content-Type"), body))
        else:
            encoding = "form"
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            args.update({k: v[0] for k, v in form.items()})
    token = args.pop("token", None)
    return args, encoding, token if isinstance(token, str) else None, error


def _parse_multipart(content_type: str, body: bytes) -> JSON:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    out: JSON = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True) or b""
            out[name] = payload if part.get_filename() else payload.decode("utf-8", "replace")
    return out


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value.strip()[:1] in {"[", "{"}:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _json_list(value: Any, error: str) -> list[JSON] | None:
    if value is None or value == "":
        return None
    decoded = _maybe_json(value)
    if not isinstance(decoded, list):
        raise _SlackError(error, "must be a JSON array")
    return decoded


def _chunks(args: JSON) -> list[Any]:
    value = args.get("chunks")
    if value is None:
        return []
    decoded = _maybe_json(value)
    if not isinstance(decoded, list):
        raise _SlackError("invalid_chunks", "chunks must be an array")
    return decoded


def _blocks(value: Any) -> list[JSON] | None:
    """Block Kit limits Slack enforces and long answers trip over."""
    if value is None or value == "":
        return None
    decoded = _maybe_json(value)
    if isinstance(value, str) and decoded is value:
        raise _SlackError("invalid_blocks_format", "blocks must be a JSON array")
    if not isinstance(decoded, list):
        raise _SlackError("invalid_blocks_format", "blocks must be a JSON array")
    problems = list(_block_problems(decoded))
    if problems:
        raise _SlackError("invalid_blocks", *problems)
    return decoded


def _block_problems(blocks: list[Any]) -> Iterable[str]:
    if len(blocks) > 50:
        yield "no more than 50 items allowed [json-pointer:/blocks]"
    for i, block in enumerate(blocks):
        where = f"[json-pointer:/blocks/{i}"
        if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
            yield f"unsupported type: {block.get('type') if isinstance(block, dict) else block!r} {where}/type]"
            continue
        kind = block["type"]
        if len(str(block.get("block_id", ""))) > 255:
            yield f"must be less than 256 characters {where}/block_id]"
        text = (block.get("text") or {}).get("text", "") if isinstance(block.get("text"), dict) else ""
        if kind == "section":
            if not block.get("text") and not block.get("fields"):
                yield f"must provide either text or fields {where}]"
            if len(text) > 3000:
                yield f"must be less than 3001 characters {where}/text/text]"
            for j, f in enumerate(block.get("fields") or []):
                if len(f.get("text", "")) > 2000:
                    yield f"must be less than 2001 characters {where}/fields/{j}/text]"
        elif kind == "header" and len(text) > 150:
            yield f"must be less than 151 characters {where}/text/text]"
        elif kind == "markdown" and len(block.get("text", "")) > 12000:
            yield f"must be less than 12001 characters {where}/text]"
        elif kind == "context" and len(block.get("elements") or []) > 10:
            yield f"no more than 10 items allowed {where}/elements]"
        elif kind == "actions":
            elements = block.get("elements") or []
            if len(elements) > 25:
                yield f"no more than 25 items allowed {where}/elements]"
            for j, element in enumerate(elements):
                if element.get("type") == "button":
                    if len((element.get("text") or {}).get("text", "")) > 75:
                        yield f"must be less than 76 characters {where}/elements/{j}/text/text]"
                    if len(str(element.get("value", ""))) > 2000:
                        yield f"must be less than 2001 characters {where}/elements/{j}/value]"
                    if len(str(element.get("action_id", ""))) > 255:
                        yield f"must be less than 256 characters {where}/elements/{j}/action_id]"


class _HTTPHandler(BaseHTTPRequestHandler):
    owner: FakeSlack
    server_version = "FakeSlack/1"
    # Keep-alive, as Slack's edge: a client may send many calls over one connection.
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner.connections_accepted += 1
            self.owner._open_connections.add(self.connection)

    def finish(self) -> None:
        with self.owner._lock:
            self.owner._open_connections.discard(self.connection)
        super().finish()

    def _serve(self, verb: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, payload = self.owner._handle_http(verb, self.path, self.headers, body)
        if status == RESET:
            # SO_LINGER 0: close() sends RST, not FIN; the client's read fails with ECONNRESET.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def log_message(self, format: str, *args: Any) -> None:
        pass
