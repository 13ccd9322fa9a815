"""``askbox bot``: Socket Mode by default, HTTP (``/slack/events``) behind a load balancer."""

from __future__ import annotations

from bot.app import build_app, web_client
from bot.settings import BotSettings, HttpBotSettings
from jobs.settings import Settings


class BotConfigError(ValueError):
    pass


def run_bot(settings: Settings, bot: BotSettings, port: int = 3000, processes: int = 1) -> None:
    """HTTP mode for ``HttpBotSettings`` (their signing secret validated), else Socket Mode."""
    if settings.slack.slack_bot_token is None:
        raise BotConfigError("SLACK_BOT_TOKEN (xoxb-...) must be set: the bot posts with it")
    http = isinstance(bot, HttpBotSettings)
    if not http and bot.slack_app_token is None:
        raise BotConfigError("SLACK_APP_TOKEN (xapp-...) must be set for Socket Mode, or run with --http")
    if http:
        # Not app.start(): Bolt's development server serves one request at a time. Each
        # process builds its own app (its own Redis and Slack connections) after the fork.
        from bot.http_server import serve_http

        serve_http(lambda: build_app(settings, bot), bot, port, processes)
        return
    app = build_app(settings, bot)
    from bot.after_ack import AckFirstSocketModeHandler

    assert bot.slack_app_token is not None
    AckFirstSocketModeHandler(
        app, bot.slack_app_token.get_secret_value(), web_client=web_client(settings.slack)
    ).start()
