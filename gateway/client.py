"""The worker's side: a sync client for the gateway's control socket, and the readers of
what the gateway records (usage, stop reason, budgets).

httpx, because it speaks HTTP over a Unix socket (``HTTPTransport(uds=...)``) from sync
code with timeouts; the worker is not async.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from gateway.budgets import check_budget
from gateway.meta import GatewaySession, SessionMeta
from gateway.usage import SessionState, session_state
from jobs import keys, tracing

log = logging.getLogger(__name__)

__all__ = [
    "GatewayClient",
    "GatewaySession",
    "GatewayUnavailable",
    "SessionMeta",
    "SessionState",
    "check_budget",
    "session_state",
    "upstream_paused",
]


class GatewayUnavailable(RuntimeError):
    """No gateway answers on the control socket; the message names the fix."""

    def __init__(self, socket_dir: Path, why: object) -> None:
        self.why = str(why)
        super().__init__(
            f"the model gateway is not running ({why}): start `askbox gateway` "
            f"(or the compose service gateway); ASKBOX_GATEWAY_SOCKET_DIR={socket_dir}"
        )


class GatewayClient:
    def __init__(self, socket_dir: Path, timeout: float = 5.0) -> None:
        self.socket_dir = Path(socket_dir)
        self.control = self.socket_dir / "control.sock"
        self.timeout = timeout

    def _client(self) -> httpx.Client:
        # A client per call: calls are rare (two per question) and a fresh connection
        # never trips over a gateway that restarted in between.
        transport = httpx.HTTPTransport(uds=str(self.control))
        return httpx.Client(transport=transport, base_url="http://gateway", timeout=self.timeout)

    def open(self, meta: SessionMeta) -> GatewaySession:
        """A new session for one question (raises GatewayUnavailable)."""
        if not self.control.exists():
            raise GatewayUnavailable(self.socket_dir, f"no socket {self.control}")
        if not meta.model:
            raise ValueError("a gateway session needs the model its agent runs (SessionMeta.model)")
        if not meta.trace:  # the session's requests are spans of the question opening it
            meta = meta.model_copy(update={"trace": tracing.carrier()})
        try:
            with self._client() as client:
                response = client.post("/sessions", json=meta.model_dump())
                response.raise_for_status()
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(self.socket_dir, exc) from exc
        return GatewaySession.model_validate(response.json())

    def close(self, session: GatewaySession) -> None:
        """Revoke the session's token (idempotent; logs, never raises, on a dead gateway)."""
        try:
            with self._client() as client:
                client.delete(f"/sessions/{session.id}").raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("could not close gateway session %s: %s", session.id, exc)

    def health(self) -> dict[str, Any]:
        """The gateway's own account: sessions, each provider's breaker state and key count
        (raises GatewayUnavailable)."""
        if not self.control.exists():
            raise GatewayUnavailable(self.socket_dir, f"no socket {self.control}")
        try:
            with self._client() as client:
                response = client.get("/health")
                response.raise_for_status()
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(self.socket_dir, exc) from exc
        found: dict[str, Any] = response.json()
        return found

    def healthy(self) -> bool:
        try:
            with self._client() as client:
                return client.get("/health").status_code == 200
        except httpx.HTTPError:
            return False


def upstream_paused(redis: Redis, name: str = "gemini") -> float | None:  # name: the provider
    """Seconds until the shared circuit breaker lets a trial request through, while it is
    open (every gateway has stopped calling the API); None while calls go through."""
    open_until = redis.hget(keys.breaker(name), "open_until")
    if open_until is None:
        return None
    remaining = float(open_until) - time.time()
    return remaining if remaining > 0 else None
