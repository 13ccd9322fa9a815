"""Which agent runs, with which model, images and (cursor-agent's) key (environment variables)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

AgentName = Literal["cursor", "gemini"]


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    agent: AgentName = "cursor"
    agent_model: str | None = Field(default=None, description="per-agent default when unset")
    # The standard names, without our prefix: what users already have in their environment.
    # The Gemini CLI's key and endpoint are not settings of the agent: each run gets them
    # from the model gateway (jobs/gateway/), which alone reads GEMINI_API_KEY.
    cursor_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("CURSOR_API_KEY"))
    # Images built elsewhere (cursor-agent cannot be built offline) or pinned by an operator.
    cursor_image: str | None = None
    gemini_image: str | None = None
    # env: trust HTTPS_PROXY; proxychains: force every connection through the proxy.
    cursor_proxy: Literal["env", "proxychains"] = "env"

    @field_validator("agent_model", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None
