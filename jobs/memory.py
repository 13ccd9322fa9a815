"""Conversation memory per Slack thread, kept in Redis.

Redis (with AOF) rather than process memory: the bot and every worker must see the same
thread, and a restart must not make the bot forget what was said.
"""

from __future__ import annotations

import logging

import redis
from pydantic import BaseModel, ValidationError

from jobs import keys
from jobs.prompt import Turn
from jobs.redis_text import text

log = logging.getLogger(__name__)

DEFAULT_MAX_TURNS = 10


class Conversation(BaseModel):
    turns: list[Turn]
    summary: str = ""


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    return errors[0]["msg"] if errors else str(exc)


class ThreadMemory:
    """The last `max_turns` turns of a thread plus a running summary.

    The summary slot holds what fell out of the window: ``append`` returns those turns and
    the compaction side task (jobs/side_tasks/compaction.py) folds them in with ``set_summary``.
    Every use refreshes the TTL, so active threads live on and idle ones expire.
    """

    def __init__(self, redis: redis.Redis, max_turns: int = DEFAULT_MAX_TURNS, ttl: int = keys.MEMORY_TTL) -> None:
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        if ttl < 1:
            raise ValueError("ttl must be at least 1 second")
        self.redis = redis
        self.max_turns = max_turns
        self.ttl = ttl

    turns_key = staticmethod(keys.memory_turns)
    summary_key = staticmethod(keys.memory_summary)

    def load(self, thread_key: str) -> Conversation:
        turns_key, summary_key = self.turns_key(thread_key), self.summary_key(thread_key)
        # One round trip; reading counts as use, so both keys get a fresh TTL together
        # (EXPIRE on a missing key is a harmless no-op).
        pipe = self.redis.pipeline(transaction=True)
        pipe.lrange(turns_key, -self.max_turns, -1)
        pipe.get(summary_key)
        pipe.expire(turns_key, self.ttl)
        pipe.expire(summary_key, self.ttl)
        raw_turns, raw_summary, _, _ = pipe.execute()
        return Conversation(turns=self._parse(raw_turns, turns_key), summary=text(raw_summary))

    @staticmethod
    def _parse(raw_turns: list[bytes], turns_key: str) -> list[Turn]:
        turns: list[Turn] = []
        for index, raw in enumerate(raw_turns):
            try:
                turns.append(Turn.model_validate_json(raw))
            except ValidationError as exc:
                # One bad entry (older format, manual edit) must not cost the whole thread.
                log.warning("skipping corrupt memory entry %d of %s: %s", index, turns_key, _first_error(exc))
        return turns

    def append(self, thread_key: str, turn: Turn) -> list[Turn]:
        """Add ``turn``; returns the turns that fell out of the window (oldest first), for
        the caller to fold into the summary (jobs/side_tasks/compaction.py)."""
        turns_key, summary_key = self.turns_key(thread_key), self.summary_key(thread_key)
        # MULTI: another process never sees the list longer than max_turns or without TTL,
        # and the turns read as dropped are exactly those the trim removes.
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(turns_key, turn.model_dump_json())
        pipe.lrange(turns_key, 0, -(self.max_turns + 1))
        pipe.ltrim(turns_key, -self.max_turns, -1)
        pipe.expire(turns_key, self.ttl)
        # Keep the summary alive as long as the turns it summarises.
        pipe.expire(summary_key, self.ttl)
        _, raw_dropped, *_ = pipe.execute()
        return self._parse(raw_dropped, turns_key)

    def set_summary(self, thread_key: str, summary: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.summary_key(thread_key), summary, ex=self.ttl)
        pipe.expire(self.turns_key(thread_key), self.ttl)
        pipe.execute()

    def forget(self, thread_key: str) -> None:
        self.redis.delete(self.turns_key(thread_key), self.summary_key(thread_key))
