"""The message shortcut "Ask askbox about this": a modal, then the answer in that message's thread.

On any message (a stack trace, an error someone pasted) the shortcut opens a modal
(``views.open``) with the question and a repository picker limited to what that channel
may see (jobs/access.py); a channel with none gets one ephemeral line instead. The
submission is checked again (Slack posts back whatever the client sent), and becomes a
question answered in the message's thread with the message quoted in its prompt.

One submission, one question: the claim and the job id come from the modal's view id,
which a second submission of the same modal (a double click, a retry) repeats.
"""

from __future__ import annotations

import json
from typing import Any

from bot.ingress import Asked, Ingress
from jobs import access, keys
from jobs.question import MAX_QUESTION_CHARS, Origin, sanitize_id

CALLBACK = "askbox_ask_about_message"
VIEW = "askbox_ask_modal"
QUESTION_BLOCK, QUESTION_INPUT = "question", "question_text"
REPO_BLOCK, REPO_INPUT = "repo", "repo_select"
QUOTE_CHARS = 2000  # of the message, kept in the modal's private_metadata (3,000 at most)
NO_REPOS = "No repository is open in this channel, so I can't answer questions about its messages here."


def origin_of(body: dict[str, Any], channel: str, user: str) -> Origin:
    team = (body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id") or "-"
    return Origin(kind="slack", user=user, team=team, channel=channel)


def modal(ingress: Ingress, body: dict[str, Any]) -> dict[str, Any] | None:
    """The modal for a shortcut on a message, or None when its channel may see no repository."""
    channel = (body.get("channel") or {}).get("id", "")
    user = (body.get("user") or {}).get("id", "")
    message = body.get("message") or {}
    jobs = ingress.settings.jobs
    repos = sorted(access.visible(jobs.repos, origin_of(body, channel, user), jobs.repo_access, jobs.channel_repos))
    if jobs.repos and not repos:
        return None
    text = str(message.get("text") or "")
    meta = {
        "c": channel,
        "m": message.get("ts"),
        "t": message.get("thread_ts") or message.get("ts"),
        "a": message.get("user") or message.get("bot_id") or "",
        "x": text[:QUOTE_CHARS],
    }
    options = [{"text": {"type": "plain_text", "text": name[:75]}, "value": name} for name in repos[:100]]
    default = jobs.channel_repos.get(channel)
    select: dict[str, Any] = {
        "type": "static_select",
        "action_id": REPO_INPUT,
        "options": options,
        "placeholder": {"type": "plain_text", "text": "Repository"},
    }
    initial = default if default in repos else repos[0] if len(repos) == 1 else None
    if initial is not None:
        select["initial_option"] = next(o for o in options if o["value"] == initial)
    blocks: list[dict[str, Any]] = [
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": "> " + (text[:280] or "(no text)").replace("\n", "\n> ")}],
        },
        {
            "type": "input",
            "block_id": QUESTION_BLOCK,
            "label": {"type": "plain_text", "text": "Your question"},
            "element": {
                "type": "plain_text_input",
                "action_id": QUESTION_INPUT,
                "multiline": True,
                "max_length": 3000,
                "placeholder": {"type": "plain_text", "text": "Where does this error come from?"},
            },
        },
    ]
    if options:
        blocks.append(
            {
                "type": "input",
                "block_id": REPO_BLOCK,
                "label": {"type": "plain_text", "text": "Repository"},
                "element": select,
            }
        )
    return {
        "type": "modal",
        "callback_id": VIEW,
        "title": {"type": "plain_text", "text": "Ask askbox"},
        "submit": {"type": "plain_text", "text": "Ask"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json.dumps(meta),
        "blocks": blocks,
    }


def submitted(ingress: Ingress, body: dict[str, Any]) -> tuple[dict[str, str], Asked | None]:
    """The modal's submission: (errors to show in the modal, or the question to accept)."""
    view = body.get("view") or {}
    user = (body.get("user") or {}).get("id", "")
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
        channel, message_ts, thread_ts = str(meta["c"]), str(meta["m"]), str(meta["t"])
    except (ValueError, KeyError, TypeError):
        return {QUESTION_BLOCK: "This form is out of date: open it again from the message."}, None
    values = (view.get("state") or {}).get("values") or {}
    question = str(((values.get(QUESTION_BLOCK) or {}).get(QUESTION_INPUT) or {}).get("value") or "").strip()
    repo = ((((values.get(REPO_BLOCK) or {}).get(REPO_INPUT) or {}).get("selected_option")) or {}).get("value")
    if not question:
        return {QUESTION_BLOCK: "Write a question."}, None
    origin = origin_of(body, channel, user).model_copy(update={"thread_ts": thread_ts, "message_ts": message_ts})
    jobs = ingress.settings.jobs
    repos = access.visible(jobs.repos, origin, jobs.repo_access, jobs.channel_repos)
    if jobs.repos and repo not in repos:
        # Only what the modal offered can be asked (a forged or stale submission names another).
        return {REPO_BLOCK: "Pick one of the repositories offered." if repos else "No repository is open here."}, None
    quoted = "\n".join("> " + line for line in str(meta.get("x") or "").splitlines()) or "> (no text)"
    author = f" from <@{meta['a']}>" if meta.get("a") else ""
    context = f"\n\nThe message this question is about{author}:\n{quoted}"
    context = context[: max(0, MAX_QUESTION_CHARS - len(question) - 10)]
    view_id = str(view.get("id") or body.get("trigger_id") or "")
    key = f"{origin.team}-{channel}-view-{view_id}"
    return {}, Asked(
        origin=origin,
        text=question,
        claim=keys.event_claim(origin.team or "-", channel, f"view-{view_id}"),
        job_id=sanitize_id(f"slack-{key}"),
        repo=repo,
        context=context,
    )
