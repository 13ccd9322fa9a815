"""askbox's own messages in a thread, found by the Slack ``metadata`` they were posted with.

A post whose answer was lost (a connection reset after Slack accepted it) may or may not
be in the thread; the thread is where to look before posting it again. Two kinds carry
metadata naming their question's job: a final message's parts (``askbox_final``,
jobs/outbox.py) and the status message (``askbox_status``, posted by the bot, or by the
worker when the bot's is gone). Reading the thread is ``conversations.replies`` with
``include_all_metadata`` (the scopes ``channels:history``, ``groups:history``,
``im:history`` the README asks for).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

STATUS_EVENT_TYPE = "askbox_status"
PAGES = 20  # of 200 messages: a thread far longer than any question's

# One page of conversations.replies for a cursor (None: the first).
FetchPage = Callable[[str | None], Any]


def status_metadata(job_id: str) -> dict[str, object]:
    return {"event_type": STATUS_EVENT_TYPE, "event_payload": {"job": job_id}}


def thread_messages(fetch: FetchPage) -> list[dict[str, Any]]:
    """Every message of a thread, page after page."""
    messages: list[dict[str, Any]] = []
    cursor = None
    for _ in range(PAGES):
        response = fetch(cursor)
        messages += response.get("messages") or []
        cursor = (response.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            break
    return messages


def replies_page(client_call: Callable[..., Any], channel: str, thread_ts: str) -> FetchPage:
    """``fetch`` for ``thread_messages`` through a conversations.replies caller."""
    return lambda cursor: client_call(
        channel=channel, ts=thread_ts, limit=200, include_all_metadata=True, cursor=cursor
    )


def tagged(messages: Iterable[dict[str, Any]], event_type: str, job_id: str) -> list[tuple[dict[str, Any], dict]]:
    """(message, payload) of the messages posted with ``event_type`` metadata for ``job_id``."""
    found = []
    for message in messages:
        meta = message.get("metadata") or {}
        payload = meta.get("event_payload") or {}
        if isinstance(payload, str):
            payload = json.loads(payload)
        if meta.get("event_type") == event_type and payload.get("job") == job_id:
            found.append((message, payload))
    return found


def status_in_thread(messages: Iterable[dict[str, Any]], job_id: str) -> str | None:
    """The ts of the job's status message in the thread, if one is there."""
    found = tagged(messages, STATUS_EVENT_TYPE, job_id)
    return str(found[0][0].get("ts")) if found else None
