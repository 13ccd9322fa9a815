"""Per-question sessions: a random token and a socket directory of its own.

Each session gets ``<socket_dir>/s-<id>/gateway.sock``, served by this process (one more
``UnixSite`` on the shared proxy runner) and mounted into that question's sandbox only.
A token is valid only on its own session's socket, so a token that leaks to another
sandbox (or to the host) is useless there. The session is also stored in Redis under the
token's hash (TTL = ``meta.ttl``) for other processes to see; authentication itself is
answered from this process's table, which is authoritative for the sockets it serves.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from redis.asyncio import Redis

from gateway import metrics
from gateway.meta import SessionMeta
from jobs import keys

log = logging.getLogger(__name__)

SOCKET_NAME = "gateway.sock"


@dataclass
class Session:
    id: str
    token_hash: str
    meta: SessionMeta
    directory: Path
    expires_at: float  # monotonic
    site: web.UnixSite | None = None
    stop_reason: str | None = None  # once set, every further request is refused with it
    in_flight: int = 0  # requests being answered now (this process alone serves the socket)
    closed: bool = field(default=False)

    @property
    def socket(self) -> Path:
        return self.directory / SOCKET_NAME


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Sessions:
    def __init__(self, redis: Redis, socket_dir: Path, runner: web.AppRunner) -> None:
        self.redis = redis
        self.socket_dir = socket_dir
        self.runner = runner
        self._by_id: dict[str, Session] = {}
        self._by_socket: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    async def open(self, meta: SessionMeta) -> tuple[Session, str]:
        session_id = secrets.token_hex(8)
        token = secrets.token_urlsafe(32)
        directory = self.socket_dir / f"s-{session_id}"
        directory.mkdir(mode=0o755)
        os.chmod(directory, 0o755)  # mkdir's mode is masked by the umask
        session = Session(session_id, keys.token_hash(token), meta, directory, time.monotonic() + meta.ttl)
        site = web.UnixSite(self.runner, str(session.socket))
        await site.start()
        # World-connectable: the sandbox's user (uid 10001) connects through its bridge.
        # Only this question's sandbox has the directory mounted.
        os.chmod(session.socket, 0o666)
        session.site = site
        record = json.dumps({"id": session_id, "meta": meta.model_dump(), "socket_dir": str(directory)})
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.gateway_token(session.token_hash), record, ex=meta.ttl)
        pipe.set(keys.gateway_session(session_id), record, ex=meta.ttl)
        await pipe.execute()
        self._by_id[session_id] = session
        self._by_socket[str(session.socket)] = session
        metrics.SESSIONS.set(len(self._by_id))
        log.info("session %s opened for job %s (user %s)", session_id, meta.job_id, meta.user)
        return session, token

    async def close(self, session_id: str) -> bool:
        """Revoke the token and remove the socket and its directory (False if unknown)."""
        session = self._by_id.pop(session_id, None)
        if session is None:
            return False
        session.closed = True
        self._by_socket.pop(str(session.socket), None)
        await self.redis.delete(keys.gateway_session(session_id), keys.gateway_token(session.token_hash))
        if session.site is not None:
            await session.site.stop()
        shutil.rmtree(session.directory, ignore_errors=True)
        metrics.SESSIONS.set(len(self._by_id))
        log.info("session %s closed", session_id)
        return True

    def on_socket(self, request: web.Request) -> Session | None:
        """The session whose socket this request came in on (not yet authenticated)."""
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        return self._by_socket.get(str(sockname))

    def authenticate(self, request: web.Request, token: str | None) -> Session:
        """The session of the socket this request came in on, if ``token`` is its token."""
        session = self.on_socket(request)
        if session is None or session.closed:
            raise AuthError(403, "This socket has no open askbox gateway session.")
        if not token:
            raise AuthError(401, "Missing API key (the askbox gateway expects the session token).")
        if not secrets.compare_digest(keys.token_hash(token), session.token_hash):
            raise AuthError(401, "API key not valid for this askbox gateway session.")
        if time.monotonic() > session.expires_at:
            raise AuthError(401, "This askbox gateway session has expired.")
        return session

    async def sweep(self) -> list[str]:
        """Close the sessions whose TTL ran out (the worker did not close them)."""
        now = time.monotonic()
        expired = [s.id for s in self._by_id.values() if now > s.expires_at]
        for session_id in expired:
            await self.close(session_id)
        return expired

    async def close_all(self) -> None:
        for session_id in list(self._by_id):
            await self.close(session_id)

    def remove_stale_dirs(self) -> None:
        """At start-up: session directories left by a gateway that died (none is live,
        since only one gateway serves a socket directory)."""
        for path in self.socket_dir.glob("s-*"):
            shutil.rmtree(path, ignore_errors=True)
