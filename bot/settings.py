"""The bot's settings: Slack's standard variables plus ``ASKBOX_*``."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class BotSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    slack_bot_token: SecretStr = Field(validation_alias=AliasChoices("SLACK_BOT_TOKEN"))
    # Socket Mode only; HTTP mode needs the signing secret instead.
    slack_app_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("SLACK_APP_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SLACK_SIGNING_SECRET")
    )
    slack_api_url: str | None = None  # e.g. an enterprise proxy; must end with /api/
    redis_url: str = "redis://localhost:6379/0"
    repos: dict[str, Path] = Field(default_factory=dict)
    channel_repos: dict[str, str] = Field(default_factory=dict, description='{"C0123": "web"}')
    admins: list[str] = Field(default_factory=list, description="Slack user ids who may cancel anything")
