"""A very long answer as a file in the thread.

Above ``file_threshold`` characters (12,000: four or more messages otherwise) the full
answer is uploaded as ``answer.md`` and the message carries a summary and a note. An
upload Slack refuses (uploads off, storage full) is not a failure: the answer is then
posted as text after all.
"""

from __future__ import annotations

import logging

from jobs.slack.calls import SlackCalls
from jobs.slack.state import SlackThread

log = logging.getLogger(__name__)

ANSWER_FILENAME = "answer.md"


def attach_answer(calls: SlackCalls, thread: SlackThread, text: str) -> str:
    """Upload ``text`` as answer.md in the thread; the note to show, or "" if not uploaded."""
    try:
        calls.upload(
            channel=thread.channel,
            thread_ts=thread.thread_ts,
            content=text,
            filename=ANSWER_FILENAME,
            title="The full answer",
        )
    except Exception as exc:  # noqa: BLE001 - uploads off, or storage full: post it as text
        log.warning("job %s: uploading %s failed (%s); posting the answer as text", thread.job_id, ANSWER_FILENAME, exc)
        return ""
    return f"_The full answer ({len(text):,} characters) is attached as `{ANSWER_FILENAME}`._"
