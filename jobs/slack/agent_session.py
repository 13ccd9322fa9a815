"""A question's Slack agent session: the status and title Slack shows on its thread, with
Slack's own stop button while the session is ``processing``.

- ``processing``, titled with the question shortened, when the job starts (``start``,
  the one call jobs/job.py makes);
- ``active`` once the answer is posted, ``closed`` when the question ended any other way
  (cancelled, timed out, refused, failed), set with the final message by whichever process
  delivers it (the worker, a canceller, the failure callback, the outbox sweep:
  jobs/slack/thread_final.py); a streamed answer's last ``chat.stopStream`` carries the
  status itself (``session_status``);
- ``agents.sessions.rename`` when the answer's summary makes a better title.

Slack's stop button arrives at the bot as ``agent_session_stopped`` (bot/app.py), which
cancels the question the Cancel button's way (jobs/cancel.py); the final then closes
the session. Best effort, like the assistant status: a workspace without the feature
answers ``feature_disabled`` and the session is left alone; setting a status is
idempotent, so the client retries it on a dropped connection (jobs/slack/web_api.py).
"""

from __future__ import annotations

import logging
import re
from typing import Literal

from rq.job import Job
from slack_sdk.errors import SlackApiError

from jobs.final import FinalKind
from jobs.question import Question
from jobs.slack.budget import SlackBudget
from jobs.slack.calls import SlackCalls
from jobs.slack.options import SlackOptions
from jobs.slack.settings import SlackSettings
from jobs.slack.state import SlackThread
from jobs.slack.web_api import error_code, shared_client

log = logging.getLogger(__name__)

Status = Literal["processing", "active", "closed"]
TITLE_CHARS = 80  # Slack allows 200; a title is read at a glance


def title_of(text: str) -> str:
    """The first line of ``text``, its whitespace collapsed, cut at a word near TITLE_CHARS."""
    line = re.sub(r"\s+", " ", (text.strip().splitlines() or [""])[0]).strip().strip("*_")
    if len(line) <= TITLE_CHARS:
        return line or "Question"
    cut = line[: TITLE_CHARS - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut[TITLE_CHARS // 2 :] else cut) + "…"


def status_after(kind: FinalKind) -> Status:
    return "active" if kind == "answer" else "closed"


def set_status(
    calls: SlackCalls, thread: SlackThread, status: Status, title: str | None = None, *, wait: bool = True
) -> bool:
    """Set the thread's session status (creating the session, titled, if it is new).
    ``wait=False``: only if the team's rate budget allows it now (a job's start never
    waits for Slack); the final's ``wait=True`` waits like the final message itself."""
    if not thread.thread_ts:
        return False
    try:
        response = calls.call(
            "agents.sessions.setStatus",
            wait=wait,
            channel_id=thread.channel,
            thread_ts=thread.thread_ts,
            status=status,
            title=title,
            initiator_user_id=thread.asker if title else None,
        )
    except SlackApiError as exc:
        log.info("job %s: agent session %s not set (%s)", thread.job_id, status, error_code(exc))
        return False
    if response is None:
        log.info("job %s: agent session %s skipped: the Slack rate budget is spent", thread.job_id, status)
    return response is not None


def rename(calls: SlackCalls, thread: SlackThread, title: str) -> None:
    if not thread.thread_ts or not title.strip():
        return
    try:
        calls.call(
            "agents.sessions.rename",
            wait=True,
            channel_id=thread.channel,
            thread_ts=thread.thread_ts,
            title=title_of(title),
        )
    except SlackApiError as exc:
        log.info("job %s: agent session not renamed (%s)", thread.job_id, error_code(exc))


def start(question: Question, job: Job, settings: SlackSettings) -> None:
    """``processing`` on the question's thread, titled with the question (a Slack question only)."""
    origin = question.origin
    if origin.kind != "slack" or not origin.channel or settings.slack_bot_token is None:
        return
    try:
        thread = SlackThread.of(question, job, streaming=False)
        client = shared_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
        calls = SlackCalls(client, SlackBudget(job.connection, origin.team or "-"), SlackOptions(), job.id)
        set_status(calls, thread, "processing", title=title_of(question.text), wait=False)
    except Exception:
        log.exception("job %s: starting the agent session failed", job.id)
