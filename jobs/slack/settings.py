"""The worker's Slack section: the bot's token and ``ASKBOX_SLACK_*``."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class SlackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    slack_bot_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("SLACK_BOT_TOKEN"))
    slack_api_url: str | None = None  # e.g. a proxy or a fake; must end with /api/
    slack_streaming: bool = False  # stream answers with chat.startStream (needs the app's streaming feature)
