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
FEEDBACK_UP = "askbox_feedback_up"
FEEDBACK_DOWN = "askbox_feedback_down"
FEEDBACK_VOTES = {FEEDBACK_UP: "up", FEEDBACK_DOWN: "down"}  # action id -> the vote it records


def section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def sections(mrkdwn: str, limit: int) -> list[Block]:
    """``mrkdwn`` as sections of at most ``limit`` characters (Block Kit's cap is 3,000)."""
    return [section(part) for part in split_message(mrkdwn, limit) if part.strip()]


def button(text: str, action_id: str, value: str, style: str | None = None) -> Block:
    element: Block = {"type": "button", "action_id": action_id, "value": value,
                      "text": {"type": "plain_text", "text": text, "emoji": True}}
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
    return {"type": "actions", "elements": [
        button(":thumbsup: Helpful", FEEDBACK_UP, job_id),
        button(":thumbsdown: Not helpful", FEEDBACK_DOWN, job_id),
    ]}


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
