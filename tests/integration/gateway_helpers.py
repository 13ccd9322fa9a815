"""Helpers for the gateway tests and bench/gateway.py: real ``askbox gateway``
processes, and a client that calls a session socket the way the Gemini CLI does.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.client import GatewayClient, GatewaySession, SessionMeta
from tests.conftest import REDIS_TEST_URL

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = REDIS_TEST_URL  # the redis_client fixture's db
MODEL = "gemini-2.5-flash"
STREAM_PATH = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
GENERATE_PATH = f"/v1beta/models/{MODEL}:generateContent"


def short_dir() -> Path:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer than that.
    path = Path(tempfile.mkdtemp(prefix="gw", dir="/tmp"))
    path.chmod(0o755)
    return path


def gateway_env(base_url: str, keys: list[str], redis_url: str = REDIS_URL, **settings: str) -> dict[str, str]:
    """The environment of a gateway process: ``settings`` as ASKBOX_<NAME> variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASKBOX_") and k != "GEMINI_API_KEY"}
    env.update(
        ASKBOX_REDIS_URL=redis_url,
        ASKBOX_GEMINI_BASE_URL=base_url,
        ASKBOX_GEMINI_API_KEYS=",".join(keys),
        ASKBOX_GATEWAY_SOCKET_DIR="",
    )
    env.update({f"ASKBOX_{k.upper()}": str(v) for k, v in settings.items()})
    return env


# Where each provider's fake goes in a gateway's environment, and its keys.
PROVIDER_VARIABLES = {
    "gemini": ("ASKBOX_GEMINI_BASE_URL", "ASKBOX_GEMINI_API_KEYS"),
    "anthropic": ("ASKBOX_ANTHROPIC_BASE_URL", "ASKBOX_ANTHROPIC_API_KEYS"),
    "openai": ("ASKBOX_OPENAI_BASE_URL", "ASKBOX_OPENAI_API_KEYS"),
}
KEY_VARIABLES = ("GEMINI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY")


def provider_env(
    provider: str, base_url: str, keys: list[str], redis_url: str = REDIS_URL, **settings: str
) -> dict[str, str]:
    """The environment of a gateway serving one provider (its fake at ``base_url``) only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASKBOX_") and k not in KEY_VARIABLES}
    url, key = PROVIDER_VARIABLES[provider]
    env.update({"ASKBOX_REDIS_URL": redis_url, url: base_url, key: ",".join(keys), "ASKBOX_GATEWAY_SOCKET_DIR": ""})
    env.update({f"ASKBOX_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@dataclass
class GatewayProcess:
    """One real gateway process with a socket directory of its own."""

    env: dict[str, str]
    socket_dir: Path = field(default_factory=short_dir)
    proc: subprocess.Popen | None = None
    log: Path | None = None

    def start(self) -> GatewayProcess:
        self.env["ASKBOX_GATEWAY_SOCKET_DIR"] = str(self.socket_dir)
        self.log = self.socket_dir.with_suffix(".log")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "askbox"), "gateway"],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while not self.client.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start:\n{self.output()}")
            time.sleep(0.05)
        return self

    @property
    def client(self) -> GatewayClient:
        return GatewayClient(self.socket_dir)

    def open(self, user: str = "U1", channel: str | None = "C1", **meta: Any) -> GatewaySession:
        meta.setdefault("model", MODEL)
        return self.client.open(
            SessionMeta(job_id=meta.pop("job_id", f"job-{time.monotonic_ns()}"), user=user, channel=channel, **meta)
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self) -> GatewayProcess:
        # Started already (``with GatewayProcess(...).start() as gw``): a second start
        # would spawn a second gateway, and only the last one would be stopped.
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def request_body(text: str = "What does this repo do?") -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


@dataclass
class Answer:
    status: int
    chunks: list[tuple[float, bytes]]  # (monotonic arrival, bytes)
    started: float

    @property
    def body(self) -> bytes:
        return b"".join(c for _, c in self.chunks)

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line[5:]) for line in self.body.split(b"\r\n") if line.startswith(b"data:")]


async def call(
    socket: Path | None,
    token: str,
    path: str = STREAM_PATH,
    *,
    body: Any = None,
    base_url: str = "http://gateway",
    session: aiohttp.ClientSession | None = None,
    use_query: bool = False,
    method: str = "POST",
) -> Answer:
    """One request as the Gemini CLI sends it (``x-goog-api-key``), over ``socket`` when
    given, else over TCP to ``base_url``; chunks are timed as they arrive."""
    own = session is None
    if session is None:
        connector = aiohttp.UnixConnector(path=str(socket)) if socket else aiohttp.TCPConnector()
        session = aiohttp.ClientSession(connector=connector)
    headers = {} if use_query else {"x-goog-api-key": token}
    if use_query:
        path += ("&" if "?" in path else "?") + f"key={token}"
    started = time.monotonic()
    try:
        payload = None if method == "GET" else (body if body is not None else request_body())
        async with session.request(method, base_url + path, json=payload, headers=headers) as response:
            chunks = [(time.monotonic(), chunk) async for chunk in response.content.iter_any()]
            return Answer(response.status, chunks, started)
    finally:
        if own:
            await session.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)
