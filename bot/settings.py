"""The bot's section of the settings tree: Socket Mode or HTTP, and which channel asks about which repo.

Redis, the repositories and the queue's limits come from ``jobs.settings`` (the bot
enqueues like any other client); the bot token and the Web API URL from the Slack
section (``jobs.slack.settings``), shared with the worker.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class BotSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    # Socket Mode only; HTTP mode needs the signing secret instead.
    slack_app_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("SLACK_APP_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SLACK_SIGNING_SECRET")
    )
    channel_repos: dict[str, str] = Field(default_factory=dict, description='{"C0123": "web"}')
