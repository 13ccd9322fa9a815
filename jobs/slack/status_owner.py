"""Who posts a question's status message ("On it", then the worker's progress): exactly one.

The bot acknowledges a question once it is queued (Redis only) and posts the status
message after the acknowledgement; a worker may start the job before that post lands, and
a bot may die before making it. ``keys.status_message(job_id)`` settles it: whoever
posts takes it first (a pending claim, jobs/claims.py, short-lived), then stores the
message's ts there. A worker that finds the claim pending waits for the ts (the bot is
posting right now); one that finds it lapsed (the bot died) takes it and posts the status
itself, after looking in the thread for a post whose answer was lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis import Redis

from jobs import claims, keys
from jobs.redis_text import text as redis_text


@dataclass(frozen=True)
class Owner:
    """The state of a question's status message in Redis."""

    ts: str | None = None  # posted: its ts
    pending: bool = False  # someone is posting it right now


def read(redis: Redis, job_id: str) -> Owner:
    value = redis.get(keys.status_message(job_id))
    if value is None:
        return Owner()
    text = redis_text(value)
    return Owner(pending=True) if text.startswith("pending-") else Owner(ts=text)


def take(redis: Redis, job_id: str, ttl: int) -> str | None:
    """The right to post the status message (a token), or None if someone has it."""
    return claims.take(redis, keys.status_message(job_id), ttl)


def posted(redis: Redis, job_id: str, ts: str) -> None:
    """Record the posted message's ts. Written even if our claim lapsed meanwhile (a slow
    post): a worker that took it over looks in the thread before it posts, and finds it."""
    redis.set(keys.status_message(job_id), ts, ex=keys.CLAIM_TTL)


def give_back(redis: Redis, job_id: str, token: str) -> None:
    """Nothing was posted (Slack refused it): the next owner may try."""
    claims.release(redis, keys.status_message(job_id), token)


def settle_for_final(redis: Redis, job_id: str, wait: float = 5.0) -> str | None:
    """The status message's ts for the final to finish, once no one will post another: a
    posted one's ts; a pending one's, waited for up to ``wait`` s (the bot posts it after
    its ack, right now); or, when none was posted, the claim taken for good (a day) so a
    bot whose reply comes after the answer posts no stale "On it" under it."""
    deadline = time.monotonic() + wait
    while True:
        owner = read(redis, job_id)
        if owner.ts is not None:
            return owner.ts
        if not owner.pending:
            if take(redis, job_id, keys.DAY) is not None:
                return None
            continue  # someone took it just now: read what they left
        if time.monotonic() >= deadline:
            return None  # a bot stuck or dead mid-post: the final looks in the thread itself
        time.sleep(0.1)
