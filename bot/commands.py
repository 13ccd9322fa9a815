"""``/askbox``: a question answered in a new thread, and what this place may ask about.

- ``/askbox QUESTION [repo=…]``: the bot posts "<@asker> asked: …" where the command was
  typed and answers in that message's thread, exactly as a mention there (bot/ingress.py);
- ``/askbox repos``: the repositories this place may ask about (jobs/access.py);
- ``/askbox usage``: the caller's questions, tokens and estimated cost today;
- ``/askbox help``.

Slack does not deliver slash commands from threads, and retries none: the listener
acknowledges at once (Slack's 3 s), and everything here runs after it, on the bot's reply
pool. What only the caller should see goes back through the command's ``response_url``
(ephemeral). A question is checked before anything is posted (an unknown repository or a
refused model is one ephemeral line, no message left behind), then its root message is
posted once (never retried blind) and the question accepted like a mention of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from redis import RedisError

from bot.ingress import Asked, Ingress, refusal, refused
from bot.parse import parse
from jobs import access, keys
from jobs.question import Origin, sanitize_id
from jobs.redis_text import texts
from jobs.slack.mrkdwn import escape

log = logging.getLogger(__name__)

COMMAND = "/askbox"
USAGE = """\
`/askbox QUESTION [repo=NAME]` — I answer in a new thread here (reply there to follow up).
`/askbox repos` — what this conversation may ask about. `/askbox usage` — your questions, tokens and cost today.
Also: mention me in a channel, write to me in my Messages tab, or use "Ask askbox about this" on any message."""

Respond = Callable[..., Any]


def run(ingress: Ingress, body: dict[str, Any], respond: Respond) -> str:
    """Carry out one ``/askbox`` (after the ack); what was done, for logs and tests."""
    text = (body.get("text") or "").strip()
    user, channel, team = body.get("user_id", ""), body.get("channel_id", ""), body.get("team_id") or "-"
    origin = Origin(kind="slack", user=user, team=team, channel=channel)
    word = text.split()[0].lower() if text else "help"
    if word in ("help", "?"):
        respond(text=USAGE)
        return "help"
    if word == "repos" and len(text.split()) == 1:
        respond(text=repos_here(ingress, origin))
        return "repos"
    if word == "usage" and len(text.split()) == 1:
        respond(text=usage_today(ingress, team, user))
        return "usage"
    return _question(ingress, origin, text, respond)


def repos_here(ingress: Ingress, origin: Origin) -> str:
    jobs = ingress.settings.jobs
    repos = access.visible(jobs.repos, origin, jobs.repo_access, jobs.channel_repos)
    if not repos:
        return "No repository is open here."
    default = jobs.channel_repos.get(origin.channel or "")
    names = ", ".join(f"`{name}`" + (" (this channel's default)" if name == default else "") for name in sorted(repos))
    return f"You may ask about: {names}."


def usage_today(ingress: Ingress, team: str, user: str) -> str:
    raw = ingress.redis.hgetall(keys.daily_usage("user", user))
    day = {k: float(v) for k, v in texts(raw).items()}
    questions, tokens, cost = int(day.get("questions", 0)), int(day.get("tokens", 0)), day.get("cost_usd", 0.0)
    return f"Today (UTC): {questions} question{'s' if questions != 1 else ''}, {tokens:,} tokens, about ${cost:.2f}."


def _question(ingress: Ingress, origin: Origin, text: str, respond: Respond) -> str:
    jobs = ingress.settings.jobs
    parsed = parse(text)
    repos = access.visible(jobs.repos, origin, jobs.repo_access, jobs.channel_repos)
    repo = parsed.repo or jobs.channel_repos.get(origin.channel or "")
    if jobs.repos and refused(repo, repos):
        respond(text=refusal(repo, repos))
        return "rejected"
    model_refusal = ingress.model_refusal(parsed.agent, parsed.model)
    if model_refusal is not None:
        respond(text=model_refusal)
        return "rejected"
    try:
        root = ingress.client.chat_postMessage(
            channel=origin.channel or "",  # a slash command always names its conversation
            text=f"<@{origin.user}> asked: {escape(text)}",
            unfurl_links=False,
            unfurl_media=False,
        )["ts"]
    except Exception as exc:  # noqa: BLE001 - whatever it was, the caller is told; nothing was queued
        log.warning("/askbox: posting the question in %s failed: %s", origin.channel, exc)
        respond(text="I can't post in this conversation. Invite me (`/invite @askbox`), or ask me in my Messages tab.")
        return "refused"
    asked_in = origin.model_copy(update={"thread_ts": root, "message_ts": root})
    asked = Asked(
        origin=asked_in,
        text=text,
        claim=keys.event_claim(origin.team or "-", origin.channel or "", root),
        job_id=sanitize_id(asked_in.event_key() or ""),
    )
    try:
        reply = ingress.accept(asked)
    except RedisError as exc:
        log.warning("/askbox: the question could not be queued: %s", exc)
        respond(
            text="I could not queue your question just now (askbox's Redis is unreachable). Please ask again "
            "in a minute."
        )
        return "refused"
    ingress.reply(reply)
    return reply.kind
