"""The repository picker: a question that names no repository, asked where there is no
default and several are open, waits for its asker to pick one instead of being refused.

The picker is an ephemeral message (only the asker sees it, so only the asker can use
it) with a select of exactly the repositories ``jobs.access`` lets that place see. The
question waits under ``keys.repo_pick`` (a day); a pick is checked again (the picker's
user is the asker, the repository is still visible there) and queued through the same
``Ingress.accept`` as any question, under a claim of its own: a second pick (a double
click, two open clients) is a duplicate, never a second job.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from redis import Redis

from bot.ingress import INTERACTION_WAIT, Asked, Ingress, Reply
from jobs import access, keys
from jobs.question import Origin
from jobs.slack.blocks import Block, section

log = logging.getLogger(__name__)

PICK_ACTION = "askbox_pick_repo"


def blocks(text: str, token: str, choices: tuple[str, ...]) -> list[Block]:
    options = [
        {"text": {"type": "plain_text", "text": name[:75]}, "value": f"{token}|{name}"} for name in choices[:100]
    ]
    return [
        section(text),
        {
            "type": "actions",
            "elements": [
                {
                    "type": "static_select",
                    "action_id": PICK_ACTION,
                    "options": options,
                    "placeholder": {"type": "plain_text", "text": "Pick a repository"},
                }
            ],
        },
    ]


def on_pick(ingress: Ingress, body: dict[str, Any]) -> Reply:
    """A repository was picked: the waiting question, queued (Redis only; the caller
    posts the reply after the ack)."""
    redis: Redis = ingress.redis
    user = (body.get("user") or {}).get("id", "")
    selected = ((body.get("actions") or [{}])[0].get("selected_option") or {}).get("value", "")
    token, _, repo = selected.partition("|")
    raw = redis.get(keys.repo_pick(token)) if token else None
    if raw is None:
        return Reply(
            "rejected", _where(body, user), text="That question has expired; please ask it again.", private=True
        )
    waiting = json.loads(raw)
    origin = Origin.model_validate(waiting["origin"])
    if user != origin.user:
        return Reply(
            "rejected",
            origin.model_copy(update={"user": user}),
            text="Only the person who asked can pick the repository.",
            private=True,
        )
    jobs = ingress.settings.jobs
    if repo not in access.visible(jobs.repos, origin, jobs.repo_access, jobs.channel_repos):
        return Reply("rejected", origin, text=f"I can't answer about the repository `{repo}` here.", private=True)
    asked = Asked(
        origin=origin,
        text=waiting["text"],
        claim=waiting["claim"] + ":picked",
        job_id=waiting["job_id"],
        repo=repo,
        context=waiting.get("context", ""),
    )
    reply = ingress.accept(asked, wait=INTERACTION_WAIT)  # a double click waits for the first's outcome
    if reply.kind == "queued":
        redis.delete(keys.repo_pick(token))
    return reply


def _where(body: dict[str, Any], user: str) -> Origin:
    container = body.get("container") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    return Origin(
        kind="slack",
        user=user,
        team=(body.get("team") or {}).get("id"),
        channel=channel,
        thread_ts=container.get("thread_ts") or container.get("message_ts"),
    )
