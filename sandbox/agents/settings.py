"""Which agent runs, with which model, and each agent's own settings (environment variables).

One pydantic model per agent (as SWE-ReX keeps one config per backend), so adding an
agent touches one place: its section here (``ASKBOX_<AGENT>_*``: the models askers may
pick, the image, and what only that agent needs), its adapter and its image.
:class:`AgentSettings` holds the choice (``ASKBOX_AGENT``, ``ASKBOX_AGENT_MODEL``) and one
section per agent, reached by name with :meth:`AgentSettings.section`.

No agent the gateway fronts (Gemini CLI, Claude Code, Codex CLI) has a key here: each run
gets a per-question token from the model gateway (gateway/), which alone reads
``GEMINI_API_KEY``, ``ANTHROPIC_API_KEY`` and ``OPENAI_API_KEY``. cursor-agent speaks its
own protocol to Cursor and keeps ``CURSOR_API_KEY``.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal, get_args

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

AgentName = Literal["cursor", "gemini", "claude", "codex"]
AGENT_NAMES: tuple[AgentName, ...] = get_args(AgentName)
# A model name as argv may carry it: letters, digits, ".", "_", "-", never a leading "-"
# (it would be read as an option). Checked against the lists below in sandbox/agents/models.py.
MODEL_NAME = r"[A-Za-z0-9._][A-Za-z0-9._-]{0,99}"


def _names(value: str | list[str] | None) -> str | list[str] | None:
    for name in [value] if isinstance(value, str) else value or []:
        if not re.fullmatch(MODEL_NAME, name):
            raise ValueError(f"{name!r} is not a model name (letters, digits, '.', '_', '-'; no leading '-')")
    return value


class AgentSection(BaseSettings):
    """What every agent has: the models askers may pick (``model=``; a JSON list or
    comma-separated) and an image built elsewhere or pinned by the operator."""

    model_config = SettingsConfigDict(extra="ignore", validate_by_name=True, validate_by_alias=True)

    models: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Models askers may pick.")
    image: str | None = Field(
        default=None, description="This agent's image instead of askbox's own (e.g. built elsewhere)."
    )

    @field_validator("models", mode="before")
    @classmethod
    def _list(cls, value: object) -> object:
        if isinstance(value, str):
            value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
        return [m.strip() for m in value if m.strip()] if isinstance(value, list) else value

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: list[str]) -> list[str]:
        _names(value)
        return value


class CursorAgentSettings(AgentSection):
    """cursor-agent (``ASKBOX_CURSOR_*``, and ``CURSOR_API_KEY``)."""

    model_config = SettingsConfigDict(
        env_prefix="ASKBOX_CURSOR_", extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["auto", "gpt-5", "sonnet-4.5", "composer-1"],
        description="Models askers may pick for cursor (comma-separated or JSON list).",
    )
    # The standard name, without our prefix: what users already have in their environment.
    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CURSOR_API_KEY", "api_key"),
        description="cursor-agent's key, handed to it on stdin (required for ASKBOX_AGENT=cursor).",
    )
    # env: trust HTTPS_PROXY; proxychains: force every connection through the proxy.
    proxy: Literal["env", "proxychains"] = Field(
        default="env",
        description="cursor-agent's proxying: env (HTTPS_PROXY) or proxychains (force every connection through it).",
    )


class GeminiAgentSettings(AgentSection):
    """The Gemini CLI (``ASKBOX_GEMINI_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="ASKBOX_GEMINI_", extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite"],
        description="Models askers may pick for gemini.",
    )


class ClaudeAgentSettings(AgentSection):
    """Claude Code (``ASKBOX_CLAUDE_*``), on the Anthropic Messages API through the gateway."""

    model_config = SettingsConfigDict(
        env_prefix="ASKBOX_CLAUDE_", extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["claude-sonnet-4-5", "claude-opus-4-5", "claude-haiku-4-5"],
        description="Models askers may pick for claude (Claude Code, through the gateway's Anthropic provider).",
    )


class CodexAgentSettings(AgentSection):
    """Codex CLI (``ASKBOX_CODEX_*``), on the OpenAI Responses API through the gateway: OpenAI's,
    or the operator's own OpenAI-compatible server (``ASKBOX_OPENAI_BASE_URL``), whose
    served models go here."""

    model_config = SettingsConfigDict(
        env_prefix="ASKBOX_CODEX_", extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["gpt-5-codex", "gpt-5", "gpt-5-mini"],
        description="Models askers may pick for codex (Codex CLI; a self-hosted server's served model names).",
    )


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    agent: AgentName = Field(
        default="cursor",
        description="Default agent: claude, codex, gemini or cursor (unset: cursor, or gemini when agent-cursor is not built).",
    )
    agent_model: str | None = Field(default=None, description="per-agent default when unset")
    cursor: CursorAgentSettings = Field(default_factory=CursorAgentSettings)
    gemini: GeminiAgentSettings = Field(default_factory=GeminiAgentSettings)
    claude: ClaudeAgentSettings = Field(default_factory=ClaudeAgentSettings)
    codex: CodexAgentSettings = Field(default_factory=CodexAgentSettings)

    @field_validator("agent_model", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("agent_model")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        _names(value)
        return value

    def section(self, agent: AgentName) -> AgentSection:
        """One agent's own settings."""
        found: AgentSection = getattr(self, agent)
        return found
