"""What the worker tells the gateway about a question, and what it gets back."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from gateway.settings import ProviderName


class SessionMeta(BaseModel, frozen=True):
    """Everything the gateway attributes usage to."""

    job_id: str
    user: str
    team: str | None = None
    channel: str | None = None
    repo: str | None = None
    # The one model the session may call (the gateway binds it into its route table); a
    # plain name, since it goes into the upstream path.
    model: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,99}$")
    # Whose API the session's socket serves (the agent's, or the side task's).
    provider: ProviderName = "gemini"
    ttl: int = Field(default=3600, ge=1)
    budget_exempt: bool = False
    # The question's trace context (W3C traceparent; jobs/tracing.py), for the gateway's spans.
    trace: dict[str, str] = Field(default_factory=dict)


class GatewaySession(BaseModel, frozen=True):
    """One question's session: mount ``socket_dir`` into the sandbox, give it ``token``."""

    id: str
    token: SecretStr  # SecretStr: never in a repr, a log line or a traceback
    socket_dir: Path

    @property
    def socket(self) -> Path:
        return self.socket_dir / "gateway.sock"
