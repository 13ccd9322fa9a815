"""The model gateway's settings (``ASKBOX_*``, and each provider's standard key variable:
``GEMINI_API_KEY``, ``ANTHROPIC_API_KEY``, ``OPENAI_API_KEY``, from the environment).

Each provider has its own keys, base URL, limits and prices (``ASKBOX_<PROVIDER>_*``);
:meth:`GatewaySettings.provider` gathers one provider's into a :class:`ProviderConfig`.
A provider is served when it has a key, or (OpenAI-compatible only) when
``ASKBOX_OPENAI_BASE_URL`` names a self-hosted server, which may need none.

Limits are ``limits``-style strings ("60/minute", "5/5 seconds") so tests can use short
windows; an empty string means no limit of that kind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_socket_dir() -> Path:
    """`/run/askbox/gateway` for root, else `~/.cache/askbox/gateway`."""
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
# Anthropic's list prices (USD per million tokens, standard tier; cache reads are billed
# lower, which the estimate ignores: it errs high).
ANTHROPIC_PRICES: dict[str, dict[str, float]] = {
    "claude-opus-4": {"input": 15.0, "output": 75.0},
    "claude-opus-4-5": {"input": 5.0, "output": 25.0},
    "claude-sonnet-4": {"input": 3.0, "output": 15.0},
    "claude-haiku-4": {"input": 1.0, "output": 5.0},
    "claude-3-5-haiku": {"input": 0.80, "output": 4.0},
}
# OpenAI's list prices. A self-hosted upstream (ASKBOX_OPENAI_BASE_URL) sets its own,
# usually {"": {"input": 0, "output": 0}}: the empty prefix matches every model.
OPENAI_PRICES: dict[str, dict[str, float]] = {
    "gpt-5": {"input": 1.25, "output": 10.0},
    "gpt-5-mini": {"input": 0.25, "output": 2.0},
    "gpt-5-nano": {"input": 0.05, "output": 0.40},
    "gpt-5-codex": {"input": 1.25, "output": 10.0},
    "gpt-4.1": {"input": 2.0, "output": 8.0},
    "gpt-4.1-mini": {"input": 0.40, "output": 1.60},
    "o4-mini": {"input": 1.10, "output": 4.40},
}
OPENAI_API_URL = "https://api.openai.com/v1"

ProviderName = Literal["gemini", "anthropic", "openai"]
PROVIDER_NAMES: tuple[ProviderName, ...] = get_args(ProviderName)


@dataclass(frozen=True)
class ProviderConfig:
    """One provider's share of the settings: what its upstream, key pool and limits need."""

    name: ProviderName
    keys: tuple[str, ...]  # ("",) for a self-hosted upstream without keys: none is sent
    base_url: str
    request_limit: str
    token_limit: str
    daily_limit: str
    prices: dict[str, dict[str, float]]

    def __repr__(self) -> str:  # never the keys
        return f"ProviderConfig({self.name}, {len(self.keys)} keys, {self.base_url})"


def _merge_keys(single: SecretStr | None, several: SecretStr) -> list[str]:
    raw = [single.get_secret_value()] if single else []
    raw += several.get_secret_value().split(",")
    return list(dict.fromkeys(k.strip() for k in raw if k.strip()))


class GatewaySettings(BaseSettings):
    """Everything the gateway and its clients (worker, service) need to agree on."""

    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    gateway_socket_dir: Path = Field(
        default_factory=_default_socket_dir,
        description="Directory of the gateway's control and per-question sockets (same path in the worker).",
    )

    # Keys: GEMINI_API_KEY and ASKBOX_GEMINI_API_KEYS (comma-separated), merged.
    gemini_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("GEMINI_API_KEY"),
        description="The Gemini API key (the gateway alone holds it; required for the gateway).",
    )
    gemini_api_keys: SecretStr = Field(
        default=SecretStr(""), description="Several Gemini keys, comma-separated, instead of GEMINI_API_KEY."
    )
    gemini_base_url: str = Field(
        default="https://generativelanguage.googleapis.com", description="Base URL of the Gemini API."
    )
    # Anthropic: ANTHROPIC_API_KEY and ASKBOX_ANTHROPIC_API_KEYS, merged.
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ANTHROPIC_API_KEY"),
        description="The Anthropic API key (the gateway alone holds it; needed for the claude agent).",
    )
    anthropic_api_keys: SecretStr = Field(
        default=SecretStr(""), description="Several Anthropic keys, comma-separated, instead of ANTHROPIC_API_KEY."
    )
    anthropic_base_url: str = Field(default="https://api.anthropic.com", description="Base URL of the Anthropic API.")
    # OpenAI, or any OpenAI-compatible server (vLLM, Ollama, LiteLLM): OPENAI_API_KEY and
    # ASKBOX_OPENAI_API_KEYS, merged; a self-hosted base URL may need no key at all.
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_API_KEY"),
        description="The OpenAI API key (the gateway alone holds it; needed for the codex agent on OpenAI).",
    )
    openai_api_keys: SecretStr = Field(
        default=SecretStr(""), description="Several OpenAI keys, comma-separated, instead of OPENAI_API_KEY."
    )
    openai_base_url: str = Field(default=OPENAI_API_URL, description="with its /v1; a self-hosted server's URL")

    # Per key, shared by every gateway through Redis. Empty = no limit.
    gemini_request_limit: str = Field(
        default="", description="Requests per key, a `limits` string such as 60/minute; empty: none."
    )
    gemini_token_limit: str = Field(default="", description="Tokens per key, e.g. 1000000/minute; empty: none.")
    gemini_daily_limit: str = Field(default="", description="Requests per key per day, e.g. 1500/day; empty: none.")
    anthropic_request_limit: str = Field(
        default="", description="Anthropic requests per key, e.g. 50/minute; empty: none."
    )
    anthropic_token_limit: str = Field(
        default="", description="Anthropic tokens per key, e.g. 400000/minute; empty: none."
    )
    openai_request_limit: str = Field(default="", description="OpenAI requests per key, e.g. 500/minute; empty: none.")
    openai_token_limit: str = Field(default="", description="OpenAI tokens per key, e.g. 500000/minute; empty: none.")

    gateway_max_wait: float = Field(default=120.0, gt=0, description="seconds a request may wait for its turn")
    gateway_retries: int = Field(default=4, ge=0, description="retries after 5xx, timeouts, connection errors")
    gateway_max_attempts: int = Field(default=30, ge=1, description="upstream attempts per request, all causes")
    gateway_backoff_initial: float = Field(default=0.5, gt=0, description="First backoff between retries, seconds.")
    gateway_backoff_max: float = Field(default=8.0, gt=0, description="Longest backoff between retries, seconds.")
    gateway_breaker_threshold: int = Field(default=5, ge=1, description="consecutive failures that open the circuit")
    gateway_breaker_cooldown: float = Field(default=30.0, gt=0, description="seconds open before a trial request")
    gateway_connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to connect to the Gemini API.")
    # No total timeout on a whole response: a long answer streams for minutes. A read that
    # stalls this long is a dead upstream.
    gateway_read_timeout: float = Field(
        default=300.0, gt=0, description="Seconds to wait for the Gemini API's response."
    )
    gateway_ca_dir: Path | None = Field(
        default=Path("/usr/local/share/ca-certificates"),
        description="Extra CA certificates the gateway trusts for upstream calls.",
    )
    gateway_metrics_port: int = Field(default=0, ge=0, le=65535, description="0 = off; served on 127.0.0.1")
    gateway_sweep_interval: float = Field(
        default=30.0, gt=0, description="Seconds between sweeps of expired gateway sessions."
    )

    gemini_prices: dict[str, dict[str, float]] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES), min_length=1, description="USD per million tokens by model prefix"
    )
    anthropic_prices: dict[str, dict[str, float]] = Field(
        default_factory=lambda: dict(ANTHROPIC_PRICES),
        min_length=1,
        description="Anthropic prices, JSON USD per million tokens by model prefix (as ASKBOX_GEMINI_PRICES).",
    )
    openai_prices: dict[str, dict[str, float]] = Field(
        default_factory=lambda: dict(OPENAI_PRICES),
        min_length=1,
        description='OpenAI (or self-hosted) prices by model prefix; a free self-hosted model: {"": {"input": 0, "output": 0}}.',
    )

    # What the gateway lets one question do at once, and what it holds for each request.
    gateway_session_concurrency: int = Field(default=2, ge=1, description="requests in flight per question")
    gateway_reserve_output_tokens: int = Field(
        default=65536, ge=1, description="answer tokens reserved for a request that sets no maxOutputTokens"
    )

    # Daily budgets (UTC day); 0 = none.
    budget_user_tokens: int = Field(default=0, ge=0, description="Tokens one user may use per UTC day; 0 = no budget.")
    budget_channel_tokens: int = Field(
        default=0, ge=0, description="Tokens one channel may use per UTC day; 0 = no budget."
    )
    budget_user_usd: float = Field(default=0.0, ge=0, description="USD one user may spend per UTC day; 0 = no budget.")
    budget_channel_usd: float = Field(
        default=0.0, ge=0, description="USD one channel may spend per UTC day; 0 = no budget."
    )
    # Per question (one gateway session); 0 = none.
    budget_question_tokens: int = Field(default=0, ge=0, description="Tokens one question may use; 0 = no budget.")
    budget_question_usd: float = Field(default=0.0, ge=0, description="USD one question may spend; 0 = no budget.")

    def api_keys(self) -> list[str]:
        """Gemini's pool: GEMINI_API_KEY first, then ASKBOX_GEMINI_API_KEYS, deduplicated."""
        return _merge_keys(self.gemini_api_key, self.gemini_api_keys)

    @property
    def self_hosted(self) -> bool:
        """Whether the OpenAI-compatible upstream is the operator's own server."""
        return self.openai_base_url.rstrip("/") != OPENAI_API_URL

    def provider(self, name: ProviderName) -> ProviderConfig:
        """One provider's keys, upstream, limits and prices."""
        if name == "gemini":
            return ProviderConfig(
                name,
                tuple(self.api_keys()),
                self.gemini_base_url,
                self.gemini_request_limit,
                self.gemini_token_limit,
                self.gemini_daily_limit,
                self.gemini_prices,
            )
        if name == "anthropic":
            return ProviderConfig(
                name,
                tuple(_merge_keys(self.anthropic_api_key, self.anthropic_api_keys)),
                self.anthropic_base_url,
                self.anthropic_request_limit,
                self.anthropic_token_limit,
                "",
                self.anthropic_prices,
            )
        keys = _merge_keys(self.openai_api_key, self.openai_api_keys)
        if not keys and self.self_hosted:
            keys = [""]  # the operator's server takes requests without a key: send none
        return ProviderConfig(
            name,
            tuple(keys),
            self.openai_base_url,
            self.openai_request_limit,
            self.openai_token_limit,
            "",
            self.openai_prices,
        )

    def served(self) -> list[ProviderConfig]:
        """The providers this gateway can serve (each with a key, or a self-hosted URL)."""
        return [config for config in map(self.provider, PROVIDER_NAMES) if config.keys]

    @property
    def control_socket(self) -> Path:
        return self.gateway_socket_dir / "control.sock"
