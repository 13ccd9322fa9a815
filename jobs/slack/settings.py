"""The worker's Slack section: the bot's token and ``ASKBOX_SLACK_*``."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class SlackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    slack_bot_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SLACK_BOT_TOKEN"),
        description="The bot token (xoxb-...): the bot and the worker post with it.",
    )
    slack_api_url: str | None = Field(
        default=None,
        description="Slack Web API base URL instead of https://slack.com/api/ (enterprise proxies, tests).",
    )  # e.g. a proxy or a fake; must end with /api/
    slack_streaming: bool = Field(
        default=False, description="Stream answers with Slack's streaming methods instead of edits."
    )  # stream answers with chat.startStream (needs the app's streaming feature)
