"""The side tasks' settings section (``ASKBOX_*``), part of the tree in jobs/settings.py."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class GeminiSettings(BaseSettings):
    """Which side tasks run, on which model, and how long each may take."""

    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    # Off by default: side tasks need a running gateway with a Gemini key, and every call
    # counts towards the same quota as the agents' traffic.
    side_tasks: bool = Field(default=False, description="master switch for triage, compaction and summaries")
    gemini_model: str = Field(default="gemini-2.5-flash-lite", min_length=1, description="the side tasks' model")
    # Any provider the gateway serves: Gemini (google-genai), Anthropic's Messages API, or
    # the OpenAI provider's Chat Completions (OpenAI, or the operator's own server).
    side_provider: Literal["gemini", "anthropic", "openai"] = Field(
        default="gemini",
        description="The side tasks' provider: gemini, anthropic or openai (OpenAI, or the self-hosted ASKBOX_OPENAI_BASE_URL).",
    )
    side_model: str = Field(
        default="", description="the side tasks' model on side_provider; empty: ASKBOX_GEMINI_MODEL"
    )
    triage: bool = Field(default=True, description="answer small talk without starting the agent")
    compaction: bool = Field(default=True, description="fold turns leaving the memory window into its summary")
    summary_chars: int = Field(default=3000, ge=0, description="answers longer than this get a summary; 0 = none")
    # Triage sits in front of every question, so it gives up sooner than the others; both
    # bounds include waiting for a turn under the gateway's shared limits.
    triage_timeout: float = Field(default=8.0, gt=0, description="Seconds triage may take before it is skipped.")
    gemini_timeout: float = Field(default=30.0, gt=0, description="compaction and summary calls")

    @model_validator(mode="after")
    def _model_for_the_provider(self) -> GeminiSettings:
        if self.side_provider != "gemini" and not self.side_model:
            raise ValueError(f"ASKBOX_SIDE_PROVIDER={self.side_provider} needs ASKBOX_SIDE_MODEL (a model it serves)")
        return self

    @property
    def model(self) -> str:
        """The side tasks' model on their provider."""
        return self.side_model or self.gemini_model

    def enabled(self, task: str) -> bool:
        """Whether ``task`` ("triage", "compaction", "summary") is switched on."""
        if not self.side_tasks:
            return False
        if task == "summary":
            return self.summary_chars > 0
        return bool(getattr(self, task))
