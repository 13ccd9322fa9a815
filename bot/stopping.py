"""Stopping a question from Slack: the Cancel button on its status message, and Slack's own
stop button on its agent session (``agent_session_stopped``, which names only the thread).

Both go the same way: only the asker (or an admin) may stop it, and jobs/cancel.py does it
(a queued question ends at once; a running one's worker sees the request within a second
and removes the sandbox). The final message says who stopped it and closes the session
(jobs/slack/agent_session.py). Whatever cannot be done is one ephemeral line to the clicker.
"""

from __future__ import annotations

import logging

from bot.ingress import Ingress
from jobs import keys
from jobs.cancel import cancel
from jobs.question import Question
from jobs.queue import fetch
from jobs.redis_text import text

log = logging.getLogger(__name__)

NOT_YOURS = "Only the person who asked (or an admin) can cancel this question."
GONE = {
    "finished": "That question has already finished: there is nothing left to stop.",
    "unknown": "I don't know that question any more (it ended long ago): there is nothing to stop.",
}


def stop(ingress: Ingress, job_id: str, user: str, channel: str, thread_ts: str | None) -> str:
    """Stop ``job_id`` for ``user``; what happened ("cancelled", "stopping", "finished",
    "unknown", "refused"), the clicker told in one ephemeral line when it was not done."""
    redis = ingress.redis
    try:
        asker: str | None = Question.model_validate(fetch(redis, job_id).args[0]).origin.user
    except Exception:  # noqa: BLE001 - expired or unknown: nothing left to cancel
        asker = None
    if asker is not None and user != asker and user not in ingress.settings.jobs.admins:
        _tell(ingress, channel, user, thread_ts, NOT_YOURS)
        return "refused"
    result = cancel(redis, job_id, by=f"<@{user}>", slack=ingress.settings.slack) if asker else "unknown"
    log.info("stop of %s by %s: %s", job_id, user, result)
    if result in GONE:
        _tell(ingress, channel, user, thread_ts, GONE[result])
    return result


def stop_thread(ingress: Ingress, team: str, channel: str, thread_ts: str, user: str) -> str:
    """Slack's stop button on the thread's agent session: its latest question."""
    job_id = ingress.redis.get(keys.thread_question(team, channel, thread_ts))
    if job_id is None:
        _tell(ingress, channel, user, thread_ts, GONE["unknown"])
        return "unknown"
    return stop(ingress, text(job_id), user, channel, thread_ts)


def _tell(ingress: Ingress, channel: str, user: str, thread_ts: str | None, text: str) -> None:
    ingress.call("chat_postEphemeral", channel=channel, user=user, thread_ts=thread_ts, text=text)
