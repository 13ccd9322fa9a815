"""The real Gemini CLI on the host, through a real gateway: it holds only the session
token, the fake receives the real key, and injected 429s never reach the CLI.

The sandbox reaches its session socket through socat on 127.0.0.1; here a small TCP to
Unix-socket bridge plays that part.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from gateway.client import session_state
from tests.fakes.gemini_api import FakeGeminiAPI, Text
from tests.integration.gateway_helpers import MODEL, GatewayProcess, gateway_env
from tests.test_fake_gemini_api import gemini_cli_home

pytestmark = pytest.mark.redis
REAL_KEY = "AIzaSy-real-key-for-the-cli-test"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def bridge(socket_path: Path) -> Iterator[int]:
    """127.0.0.1:<port> forwarded to ``socket_path`` (what socat does in the sandbox)."""
    loop = asyncio.new_event_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(str(socket_path))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)

    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)


def test_real_gemini_cli_through_the_gateway(redis_client: Redis, tmp_path: Path):
    home = gemini_cli_home(tmp_path)
    (tmp_path / "workspace").mkdir()
    with FakeGeminiAPI(default=Text("the gateway works", chunks=3)) as fake:
        fake.inject_429(0.5, seed=3, retry_delay="0.2s")
        with GatewayProcess(gateway_env(fake.base_url, [REAL_KEY])) as gateway:
            session = gateway.open(model=MODEL)
            token = session.token.get_secret_value()
            for port in bridge(session.socket):
                env = {
                    "PATH": os.environ["PATH"],
                    "HOME": str(home),
                    "TMPDIR": str(tmp_path),
                    "GEMINI_API_KEY": token,
                    "GOOGLE_GEMINI_BASE_URL": f"http://127.0.0.1:{port}",
                }
                proc = subprocess.run(
                    ["gemini", "-p", "Say hi", "-m", MODEL, "-o", "stream-json"],
                    cwd=tmp_path / "workspace",
                    env=env,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
            state = session_state(redis_client, session.id)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    answer = "".join(e["content"] for e in events if e["type"] == "message" and e["role"] == "assistant")
    assert answer == "the gateway works" and events[-1]["status"] == "success"
    assert fake.generate_requests and {r.api_key for r in fake.generate_requests} == {REAL_KEY}
    assert all(token not in repr(r.headers) + r.raw_body.decode() for r in fake.requests)
    assert fake.injected_429s > 0 and state.absorbed_429 == fake.injected_429s
    assert "429" not in proc.stderr and "RESOURCE_EXHAUSTED" not in proc.stdout + proc.stderr
    sent = [r.usage for r in fake.generate_requests if r.usage]
    assert state.total_tokens == sum(u["totalTokenCount"] for u in sent)
