"""The Bolt app: thin listeners over ``Ingress``, plus the Cancel and feedback buttons."""

from __future__ import annotations

import logging
import re
from typing import Any

from redis import Redis
from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from bot.ingress import CANCEL_ACTION, Ingress
from bot.settings import BotSettings
from jobs.cancel import cancel
from jobs.metrics import FEEDBACK_COUNTS_KEY
from jobs.queue import fetch
from jobs.question import Question

log = logging.getLogger(__name__)
FEEDBACK_ACTIONS = {"askbox_feedback_up": "up", "askbox_feedback_down": "down"}


def web_client(settings: BotSettings) -> WebClient:
    client = WebClient(
        token=settings.slack_bot_token.get_secret_value(),
        **({"base_url": settings.slack_api_url} if settings.slack_api_url else {}),
    )
    client.retry_handlers.extend([RateLimitErrorRetryHandler(max_retry_count=3), ConnectionErrorRetryHandler()])
    return client


def build_app(settings: BotSettings, redis: Redis | None = None) -> App:
    redis = redis or Redis.from_url(settings.redis_url)
    client = web_client(settings)
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    # Acknowledge only after the listener ran: if Redis is down, the listener raises, Slack
    # gets no ack and delivers the event again later, and the question is not lost. The
    # listener stays well under Slack's 3 s (claim, reaction, status message, enqueue).
    app = App(client=client, signing_secret=secret or "unused-in-socket-mode", process_before_response=True)
    ingress = Ingress(redis, client, settings)

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
        if user != asker and user not in settings.admins:
            client.chat_postEphemeral(channel=body["channel"]["id"], user=user,
                                      thread_ts=body.get("message", {}).get("thread_ts"),
                                      text="Only the person who asked (or an admin) can cancel this question.")
            return
        log.info("cancel of %s by %s: %s", job_id, user, cancel(redis, job_id, by=f"<@{user}>"))

    @app.action(re.compile(r"^askbox_feedback_(up|down)$"))
    def on_feedback(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        action = body["actions"][0]
        vote = FEEDBACK_ACTIONS.get(action["action_id"])
        if vote:
            # One vote per person per answer; counts kept for the metrics and the team.
            previous = redis.hget(f"askbox:feedback:{action['value']}", body["user"]["id"])
            if previous != vote.encode():
                with redis.pipeline() as pipe:
                    pipe.hset(f"askbox:feedback:{action['value']}", body["user"]["id"], vote)
                    pipe.hincrby(FEEDBACK_COUNTS_KEY, vote, 1)
                    if previous:
                        pipe.hincrby(FEEDBACK_COUNTS_KEY, previous.decode(), -1)  # changed their mind
                    pipe.execute()

    return app
