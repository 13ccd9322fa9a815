"""Answer cache: the same question about the same commit gets the earlier answer.

Keyed by (access scope, repo, HEAD commit, agent, model, normalized question). The commit
is what makes reuse safe: a new commit is a new key, so an answer never outlives the code
it describes. The scope (``jobs.access.cache_scope``: the channel, one person's DMs, or the
terminal) is what keeps it where it was asked: an answer from one channel is never served
in another, whatever the access policy says.
A fresh run is simply a caller that skips `get` (and then `put`s the new answer).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import UTC, datetime

import redis
from pydantic import BaseModel, ValidationError, field_validator

from jobs import keys

log = logging.getLogger(__name__)


_WHITESPACE = re.compile(r"\s+")
# Trailing punctuation that does not change the question ("why?" == "why"); full-width
# forms included because Slack users type them.
_TRAILING = "?!.？！。"


def normalize_question(text: str) -> str:
    """Case-fold, collapse whitespace, drop trailing ?!. — nothing else.

    Option words such as `fresh` are NOT removed here: parsing them is the caller's job,
    and guessing here could merge two genuinely different questions.
    """
    text = _WHITESPACE.sub(" ", text.casefold()).strip()
    return text.rstrip(_TRAILING + " ")


def cache_key(scope: str, repo: str, commit: str, agent: str, model: str | None, question: str) -> str:
    # JSON of the tuple, not a joined string: no separator can make two tuples collide.
    material = json.dumps([scope, repo, commit, agent, model, normalize_question(question)], ensure_ascii=False)
    return keys.cached_answer(hashlib.sha256(material.encode("utf-8")).hexdigest())


class CachedAnswer(BaseModel):
    text: str
    repo: str
    commit: str
    agent: str
    model: str | None = None
    created_at: datetime
    duration: float | None = None

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # Naive datetimes are taken as UTC so notice() never prints a local time as UTC.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def notice(self) -> str:
        when = self.created_at.strftime("%Y-%m-%d %H:%M UTC")
        return f"Cached answer from commit {self.commit[:7]} ({when}). Add `fresh` to ask again."


class AnswerCache:
    """The answers of one access scope; required, so no caller shares answers by accident."""

    def __init__(self, redis: redis.Redis, ttl: int = keys.CACHE_TTL, *, scope: str) -> None:
        if ttl < 1:
            raise ValueError("ttl must be at least 1 second")
        if not scope:
            raise ValueError("an answer cache needs its access scope")
        self.redis = redis
        self.ttl = ttl
        self.scope = scope

    def get(self, repo: str, commit: str | None, agent: str, model: str | None, question: str) -> CachedAnswer | None:
        # No commit (not a git checkout): the files can change under the same key, so a
        # stored answer could describe code that no longer exists. Never cache then.
        if commit is None:
            return None
        key = cache_key(self.scope, repo, commit, agent, model, question)
        raw = self.redis.get(key)
        if raw is None:
            return None
        try:
            return CachedAnswer.model_validate_json(raw)
        except ValidationError as exc:
            # A bad entry is a miss, not an error: the question just runs again and the
            # fresh answer overwrites it.
            log.warning("ignoring corrupt cache entry %s: %s", key, exc)
            return None

    def put(
        self,
        repo: str,
        commit: str | None,
        agent: str,
        model: str | None,
        question: str,
        text: str,
        duration: float | None,
    ) -> CachedAnswer | None:
        if commit is None:  # see get(): without a commit nothing is safe to reuse
            return None
        answer = CachedAnswer(
            text=text,
            repo=repo,
            commit=commit,
            agent=agent,
            model=model,
            created_at=datetime.now(UTC),
            duration=duration,
        )
        self.redis.set(
            cache_key(self.scope, repo, commit, agent, model, question), answer.model_dump_json(), ex=self.ttl
        )
        return answer
