"""The Bolt app: thin listeners over ``Ingress`` and the surfaces beside mentions.

Every listener returns once what it must do in Redis is done (Bolt then acknowledges);
Slack calls run after the acknowledgement on the ingress's reply pool (bot/ingress.py).
The events, actions, commands and views handled here are what ``askbox slack manifest``
subscribes to (bot/manifest.py), and its unit test checks the two agree.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from redis import Redis
from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot import commands, home, picker, shortcut, stopping
from bot.ingress import INTERACTION_WAIT, Ingress
from bot.settings import BotSettings, HttpBotSettings
from jobs import feedback
from jobs.settings import Settings
from jobs.slack.blocks import CANCEL_ACTION, FEEDBACK_ACTION, FEEDBACK_VOTES, feedback_vote
from jobs.slack.settings import SlackSettings
from jobs.slack.web_api import slack_client

log = logging.getLogger(__name__)

# What the app subscribes to: bot/manifest.py reads these (one list, two users).
BOT_EVENTS = (
    "app_mention",
    "message.channels",
    "message.groups",
    "message.im",
    "message.mpim",
    "app_home_opened",
    "agent_session_stopped",
)


def web_client(settings: SlackSettings) -> WebClient:
    """The bot's client: the worker's (jobs/slack/web_api.py), with the same retries."""
    assert settings.slack_bot_token is not None, "run_bot checks SLACK_BOT_TOKEN first"
    return slack_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)


def build_app(settings: Settings, bot: BotSettings, redis: Redis | None = None) -> App:
    redis = redis or settings.redis.client()
    client = web_client(settings.slack)
    # HTTP mode verifies every request with the signing secret (HttpBotSettings refuses
    # to start without one). Socket Mode has no request to verify: verification is off by
    # Bolt's own option, never fed a made-up secret that would then be the key for anyone
    # who knows it should the same app ever be served over HTTP.
    http = isinstance(bot, HttpBotSettings)
    secret = bot.slack_signing_secret.get_secret_value() if http and bot.slack_signing_secret else ""
    # Acknowledge only after the listener ran: if Redis is down, the listener raises, Slack
    # gets no ack and delivers the event again later, and the question is not lost. The
    # listener does Redis work only (claim, enqueue); Slack calls come after the ack.
    app = App(client=client, signing_secret=secret, request_verification_enabled=http, process_before_response=True)
    ingress = Ingress(redis, client, settings, bot)
    later = ingress.defer  # Slack calls: on the reply pool, after the ack (bot/after_ack.py)

    @app.event("app_mention")
    def on_mention(body: dict[str, Any]) -> None:
        ingress.event(body)

    @app.event("message")
    def on_message(body: dict[str, Any]) -> None:
        ingress.event(body)

    @app.event("app_home_opened")
    def on_home(body: dict[str, Any]) -> None:
        event = body.get("event") or {}
        team, user = body.get("team_id") or "-", event.get("user", "")
        if event.get("tab") == "messages":
            later(home.set_prompts, ingress, team, user, event.get("channel", ""))
        else:
            later(home.publish, ingress, team, user)

    @app.event("agent_session_stopped")
    def on_session_stopped(body: dict[str, Any]) -> None:
        event = body.get("event") or {}
        later(
            stopping.stop_thread,
            ingress,
            body.get("team_id") or "-",
            event.get("channel", ""),
            event.get("thread_ts", ""),
            event.get("user", ""),
        )

    @app.command(commands.COMMAND)
    def on_command(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        later(commands.run, ingress, body, respond)

    @app.shortcut(shortcut.CALLBACK)
    def on_shortcut(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        later(_open_modal, ingress, body, respond)

    @app.view(shortcut.VIEW)
    def on_submit(ack: Ack, body: dict[str, Any]) -> None:
        errors, asked = shortcut.submitted(ingress, body)
        if asked is None:
            ack(response_action="errors", errors=errors)
            return
        reply = ingress.accept(asked, wait=INTERACTION_WAIT)  # Redis only: the modal closes when this returns
        ack()
        if reply.kind == "duplicate":
            later(
                ingress.call,
                "chat_postEphemeral",
                channel=asked.origin.channel,
                user=asked.origin.user,
                thread_ts=asked.origin.thread_ts,
                text="You already asked this: the answer comes in the message's thread.",
            )
        else:
            ingress.later(reply)

    @app.action(picker.PICK_ACTION)
    def on_pick(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        reply = picker.on_pick(ingress, body)
        ack()
        if reply.kind in ("queued", "duplicate"):
            later(respond, delete_original=True)  # the picker goes; the status message says the rest
        ingress.later(reply)

    @app.action(CANCEL_ACTION)
    def on_cancel(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        message = body.get("message") or {}
        later(
            stopping.stop,
            ingress,
            body["actions"][0]["value"],
            body["user"]["id"],
            body["channel"]["id"],
            message.get("thread_ts"),
        )

    @app.action(re.compile("^(" + "|".join(map(re.escape, [FEEDBACK_ACTION, *FEEDBACK_VOTES])) + ")$"))
    def on_feedback(ack: Ack, body: dict[str, Any]) -> None:
        vote = feedback_vote(body["actions"][0])
        if vote is not None:
            # One verdict per person per answer, recorded before the ack (Redis only).
            feedback.record(redis, vote[1], body["user"]["id"], vote[0])  # type: ignore[arg-type]
        ack()

    return app


def _open_modal(ingress: Ingress, body: dict[str, Any], respond: Respond) -> None:
    view = shortcut.modal(ingress, body)
    if view is None:
        respond(text=shortcut.NO_REPOS)
        return
    ingress.call("views_open", trigger_id=body["trigger_id"], view=view)
