"""The bot's section of the settings tree: Socket Mode or HTTP, and who may follow up.

Redis, the repositories, which channel asks about which repo (the worker enforces it
too) and the queue's limits come from ``jobs.settings`` (the bot
enqueues like any other client); the bot token and the Web API URL from the Slack
section (``jobs.slack.settings``), shared with the worker.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict


class BotSettings(BaseSettings):
    """Socket Mode's (``askbox bot``): events arrive over the app's own WebSocket, opened
    with the app token, so there is no request to verify and no signing secret is used."""

    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    # Socket Mode only; HTTP mode needs the signing secret instead.
    slack_app_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("SLACK_APP_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(default=None, validation_alias=AliasChoices("SLACK_SIGNING_SECRET"))
    # HTTP mode (bot/http_server.py). Slack waits 3 s for an answer, so a request still
    # arriving after http_request_timeout is not Slack's; its events are a few KiB.
    http_host: str = Field(default="0.0.0.0", description="address --http listens on (behind a load balancer)")
    http_request_timeout: float = Field(default=10.0, gt=0, description="seconds for a whole request to arrive")
    http_max_body: int = Field(default=1024 * 1024, ge=1024, description="bytes; a larger body gets 413 unread")
    http_keep_alive: int = Field(default=5, ge=1, description="seconds an idle keep-alive connection stays open")
    # Replies in a thread the bot was mentioned in: questions from its asker only, or anyone's.
    follow_ups: Literal["asker", "anyone"] = "asker"
    # Threads posting reactions and status messages after Slack has its acknowledgement
    # (bot/ingress.py): a burst queues its replies here, never in Slack's 3 s.
    reply_threads: int = Field(default=8, ge=1, le=64, description="threads posting replies after the ack")


class HttpBotSettings(BotSettings):
    """HTTP mode's (``askbox bot --http``): every request is verified with the signing
    secret, so the process does not start without one. An empty value is refused too:
    Bolt would verify against "", and anyone could then sign events as any user, channel
    or Slack Connect flag."""

    slack_signing_secret: SecretStr = Field(validation_alias=AliasChoices("SLACK_SIGNING_SECRET"))

    @field_validator("slack_signing_secret")
    @classmethod
    def _secret_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            # A custom type: the CLI does not echo a secret's value (bot/cli/__init__.py).
            raise PydanticCustomError("askbox_secret", "is empty; HTTP mode verifies every Slack request with it")
        return value
