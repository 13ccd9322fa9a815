"""The Block Kit pieces askbox posts, for the bot and the worker alike.

The status message with its Cancel button (posted by the bot, edited by the worker),
the feedback buttons under an answer, mrkdwn sections and the footer line. The action
ids are the contract between the buttons posted here and the bot's handlers
(bot/app.py), so they are defined once, here.
"""

from __future__ import annotations

from typing import Any

from jobs.final import Final
from jobs.slack.mrkdwn import escape, escape_url, split_message

Block = dict[str, Any]

CANCEL_ACTION = "askbox_cancel"
# Slack's feedback buttons element: one action id, the verdict and the job in its value.
FEEDBACK_ACTION = "askbox_feedback"
# The buttons answers carried before (still handled: those answers stay in threads).
FEEDBACK_UP = "askbox_feedback_up"
FEEDBACK_DOWN = "askbox_feedback_down"
FEEDBACK_VOTES = {FEEDBACK_UP: "up", FEEDBACK_DOWN: "down"}  # action id -> the vote it records


def section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def sections(mrkdwn: str, limit: int) -> list[Block]:
    """``mrkdwn`` as sections of at most ``limit`` characters (Block Kit's cap is 3,000)."""
    return [section(part) for part in split_message(mrkdwn, limit) if part.strip()]


def button(text: str, action_id: str, value: str, style: str | None = None) -> Block:
    element: Block = {
        "type": "button",
        "action_id": action_id,
        "value": value,
        "text": {"type": "plain_text", "text": text, "emoji": True},
    }
    if style:
        element["style"] = style
    return element


def cancel_actions(job_id: str) -> Block:
    """The Cancel button; it stays on the status message until the final state."""
    return {"type": "actions", "elements": [button("Cancel", CANCEL_ACTION, job_id, style="danger")]}


def status_blocks(text: str, job_id: str) -> list[Block]:
    """A status message: one line of state and the Cancel button."""
    return [section(text), cancel_actions(job_id)]


def feedback_actions(job_id: str) -> Block:
    """Slack's feedback buttons (thumbs up and down) under an answer; each value is
    ``verdict:job id`` (``feedback_vote`` reads it back)."""

    def half(verdict: str, text: str) -> Block:
        return {
            "text": {"type": "plain_text", "text": text},
            "accessibility_label": f"Mark this answer {text.lower()}",
            "value": f"{verdict}:{job_id}",
        }

    return {
        "type": "context_actions",
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": FEEDBACK_ACTION,
                "positive_button": half("up", "Helpful"),
                "negative_button": half("down", "Not helpful"),
            }
        ],
    }


def feedback_vote(action: dict[str, Any]) -> tuple[str, str] | None:
    """(verdict, job id) of a click on the feedback buttons (or the older buttons), or None."""
    value = str(action.get("value") or "")
    if action.get("action_id") == FEEDBACK_ACTION:
        verdict, _, job_id = value.partition(":")
        return (verdict, job_id) if verdict in ("up", "down") and job_id else None
    vote = FEEDBACK_VOTES.get(str(action.get("action_id")))
    return (vote, value) if vote and value else None


def footer(final: Final) -> list[Block]:
    """The final's footer (repo, commit, agent, time) as a context line, or nothing; the
    short sha links to the commit on the repository's web host when there is one."""
    text = final.footer(escape, lambda short, url: f"<{escape_url(url)}|{short}>")
    return [{"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}] if text else []


def plain_text(blocks: list[Block]) -> str:
    """The text of the sections and context lines, for a text-only fallback."""
    texts = [b["text"]["text"] for b in blocks if b.get("type") == "section"]
    texts += [e["text"] for b in blocks if b.get("type") == "context" for e in b["elements"]]
    return "\n".join(texts)
