"""The model gateway's settings (``ASKBOX_*`` and ``GEMINI_API_KEY`` from the environment).

Limits are ``limits``-style strings ("60/minute", "5/5 seconds") so tests can use short
windows; an empty string means no limit of that kind.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_socket_dir() -> Path:
    # Root (the compose service) gets a system path; a developer's own run stays in HOME.
    if os.geteuid() == 0:
        return Path("/run/askbox/gateway")
    return Path.home() / ".cache" / "askbox" / "gateway"


# USD per million tokens (Gemini API paid tier, text, prompts <= 200k tokens). The longest
# matching model prefix wins, so "gemini-2.5-flash-lite" is not priced as flash.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gemini-2.5-pro": {"input": 1.25, "output": 10.0},
    "gemini-2.5-flash": {"input": 0.30, "output": 2.50},
    "gemini-2.5-flash-lite": {"input": 0.10, "output": 0.40},
    "gemini-2.0-flash": {"input": 0.10, "output": 0.40},
}  # a model no prefix matches is priced at the most expensive entry (metering.price_for)


class GatewaySettings(BaseSettings):
    """Everything the gateway and its clients (worker, service) need to agree on."""

    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    gateway_socket_dir: Path = Field(default_factory=_default_socket_dir)

    # Keys: GEMINI_API_KEY and ASKBOX_GEMINI_API_KEYS (comma-separated), merged.
    gemini_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("GEMINI_API_KEY"))
    gemini_api_keys: SecretStr = SecretStr("")
    gemini_base_url: str = "https://generativelanguage.googleapis.com"

    # Per key, shared by every gateway through Redis. Empty = no limit.
    gemini_request_limit: str = ""
    gemini_token_limit: str = ""
    gemini_daily_limit: str = ""

    gateway_max_wait: float = Field(default=120.0, gt=0, description="seconds a request may wait for its turn")
    gateway_retries: int = Field(default=4, ge=0, description="retries after 5xx, timeouts, connection errors")
    gateway_max_attempts: int = Field(default=30, ge=1, description="upstream attempts per request, all causes")
    gateway_backoff_initial: float = Field(default=0.5, gt=0)
    gateway_backoff_max: float = Field(default=8.0, gt=0)
    gateway_breaker_threshold: int = Field(default=5, ge=1, description="consecutive failures that open the circuit")
    gateway_breaker_cooldown: float = Field(default=30.0, gt=0, description="seconds open before a trial request")
    gateway_connect_timeout: float = Field(default=10.0, gt=0)
    # No total timeout on a whole response: a long answer streams for minutes. A read that
    # stalls this long is a dead upstream.
    gateway_read_timeout: float = Field(default=300.0, gt=0)
    gateway_ca_dir: Path | None = Path("/usr/local/share/ca-certificates")
    gateway_metrics_port: int = Field(default=0, ge=0, le=65535, description="0 = off; served on 127.0.0.1")
    gateway_sweep_interval: float = Field(default=30.0, gt=0)

    gemini_prices: dict[str, dict[str, float]] = Field(default_factory=lambda: dict(DEFAULT_PRICES), min_length=1,
                                                       description="USD per million tokens by model prefix")

    # What the gateway lets one question do at once, and what it holds for each request.
    gateway_session_concurrency: int = Field(default=2, ge=1, description="requests in flight per question")
    gateway_reserve_output_tokens: int = Field(
        default=65536, ge=1, description="answer tokens reserved for a request that sets no maxOutputTokens")

    # Daily budgets (UTC day); 0 = none.
    budget_user_tokens: int = Field(default=0, ge=0)
    budget_channel_tokens: int = Field(default=0, ge=0)
    budget_user_usd: float = Field(default=0.0, ge=0)
    budget_channel_usd: float = Field(default=0.0, ge=0)
    # Per question (one gateway session); 0 = none.
    budget_question_tokens: int = Field(default=0, ge=0)
    budget_question_usd: float = Field(default=0.0, ge=0)

    def api_keys(self) -> list[str]:
        """The pool: GEMINI_API_KEY first, then ASKBOX_GEMINI_API_KEYS, deduplicated."""
        raw = [self.gemini_api_key.get_secret_value()] if self.gemini_api_key else []
        raw += self.gemini_api_keys.get_secret_value().split(",")
        return list(dict.fromkeys(k.strip() for k in raw if k.strip()))

    @property
    def control_socket(self) -> Path:
        return self.gateway_socket_dir / "control.sock"
