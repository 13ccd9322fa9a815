"""The Bolt app: thin listeners over ``Ingress``, plus the Cancel and feedback buttons."""

from __future__ import annotations

import logging
import re
from typing import Any

from redis import Redis
from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.ingress import Ingress
from bot.settings import BotSettings, HttpBotSettings
from jobs.settings import Settings
from jobs.slack.settings import SlackSettings
from jobs import keys
from jobs.cancel import cancel
from jobs.queue import fetch
from jobs.question import Question
from jobs.slack.blocks import CANCEL_ACTION, FEEDBACK_VOTES
from jobs.slack.web_api import slack_client

log = logging.getLogger(__name__)


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
    # listener stays well under Slack's 3 s (claim, reaction, status message, enqueue).
    app = App(client=client, signing_secret=secret, request_verification_enabled=http,
              process_before_response=True)
    ingress = Ingress(redis, client, settings, bot)

    @app.event("app_mention")
    def on_mention(body: dict[str, Any]) -> None:
        ingress.on_event(body)

    @app.event("message")
    def on_message(body: dict[str, Any]) -> None:
        ingress.on_event(body)

    @app.action(CANCEL_ACTION)
    def on_cancel(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        user = body["user"]["id"]
        job_id = body["actions"][0]["value"]
        try:
            asker = Question.model_validate(fetch(redis, job_id).args[0]).origin.user
        except Exception:  # noqa: BLE001 - expired or unknown: nothing left to cancel
            asker = None
        if user != asker and user not in settings.jobs.admins:
            client.chat_postEphemeral(channel=body["channel"]["id"], user=user,
                                      thread_ts=body.get("message", {}).get("thread_ts"),
                                      text="Only the person who asked (or an admin) can cancel this question.")
            return
        log.info("cancel of %s by %s: %s", job_id, user, cancel(redis, job_id, by=f"<@{user}>", slack=settings.slack))

    @app.action(re.compile("^(" + "|".join(map(re.escape, FEEDBACK_VOTES)) + ")$"))
    def on_feedback(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        action = body["actions"][0]
        vote = FEEDBACK_VOTES.get(action["action_id"])
        if vote:
            # One vote per person per answer; counts kept for the metrics and the team.
            votes = keys.feedback_votes(action["value"])
            previous = redis.hget(votes, body["user"]["id"])
            if previous != vote.encode():
                with redis.pipeline() as pipe:
                    pipe.hset(votes, body["user"]["id"], vote)
                    pipe.hincrby(keys.FEEDBACK_COUNTS, vote, 1)
                    if previous:
                        pipe.hincrby(keys.FEEDBACK_COUNTS, previous.decode(), -1)  # changed their mind
                    pipe.execute()

    return app
