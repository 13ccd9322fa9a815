"""Which agent runs, with which model, images and (cursor-agent's) key (environment variables)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal, get_args

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

AgentName = Literal["cursor", "gemini"]
AGENT_NAMES: tuple[AgentName, ...] = get_args(AgentName)
# A model name as argv may carry it: letters, digits, ".", "_", "-", never a leading "-"
# (it would be read as an option). Checked against the lists below in sandbox/agents/models.py.
MODEL_NAME = r"[A-Za-z0-9._][A-Za-z0-9._-]{0,99}"


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    agent: AgentName = "cursor"
    agent_model: str | None = Field(default=None, description="per-agent default when unset")
    # The models askers may pick with model= (JSON list or comma-separated); ASKBOX_AGENT_MODEL
    # is allowed as well. Defaults: what each CLI offers and askbox is priced for.
    cursor_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["auto", "gpt-5", "sonnet-4.5", "composer-1"])
    gemini_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite"])
    # The standard names, without our prefix: what users already have in their environment.
    # The Gemini CLI's key and endpoint are not settings of the agent: each run gets them
    # from the model gateway (gateway/), which alone reads GEMINI_API_KEY.
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

    @field_validator("cursor_models", "gemini_models", mode="before")
    @classmethod
    def _list(cls, value: object) -> object:
        if isinstance(value, str):
            value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
        return [m.strip() for m in value if m.strip()] if isinstance(value, list) else value

    @field_validator("agent_model", "cursor_models", "gemini_models")
    @classmethod
    def _model_names(cls, value: str | list[str] | None) -> str | list[str] | None:
        for name in [value] if isinstance(value, str) else value or []:
            if not re.fullmatch(MODEL_NAME, name):
                raise ValueError(f"{name!r} is not a model name (letters, digits, '.', '_', '-'; no leading '-')")
        return value
