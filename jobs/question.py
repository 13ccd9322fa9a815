"""A question: who asked, where the answer goes, what was asked, with which options."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sandbox.agents.settings import AgentName

MAX_QUESTION_CHARS = 8000
FORCE_AGENT_WORD = "agent"
Priority = Literal["high", "default", "low"]


def sanitize_id(text: str) -> str:
    """RQ job ids and Docker labels take [A-Za-z0-9_-]; Slack timestamps have dots."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:120]


class Origin(BaseModel):
    """Where a question came from and where its answer goes."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["slack", "terminal"]
    user: str
    team: str | None = None
    channel: str | None = None
    thread_ts: str | None = None  # the thread's root message
    message_ts: str | None = None  # the message that asked
    session: str | None = None  # a terminal conversation's name, for follow-ups
    status_ts: str | None = None  # the bot's status message in the thread (progress, Cancel)
    # Slack Connect: the channel is shared with another organisation, or the asker is from
    # another workspace. Set by the bot; decides what the access policy allows (jobs/access.py).
    shared: bool = False

    def thread_key(self, fallback: str) -> str:
        """The conversation this belongs to; ``fallback`` names a terminal question's own."""
        if self.kind == "slack":
            return f"slack:{self.team}:{self.channel}:{self.thread_ts or self.message_ts}"
        return f"terminal:{self.user}:{self.session or fallback}"

    def event_key(self) -> str | None:
        """The triggering message's identity: one question per message, however often delivered."""
        if self.kind == "slack" and self.message_ts:
            return f"slack-{self.team}-{self.channel}-{self.message_ts}"
        return None


class Question(BaseModel):
    origin: Origin
    text: str = Field(min_length=1)
    repo: str | None = None
    agent: AgentName | None = None
    model: str | None = None
    fresh: bool = False  # skip the answer cache
    force_agent: bool = False  # skip triage: the agent answers even small talk
    priority: Priority = "default"
    asked_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    id: str = ""  # the RQ job id; derived from the origin when empty

    @model_validator(mode="before")
    @classmethod
    def _agent_keyword(cls, data: object) -> object:
        # The word `agent` at the start or end of a question forces the agent (docs/gateway.md,
        # "Gemini side tasks"). Here rather than in the bot's parser so a question from any origin
        # (Slack, `askbox ask`) honours it; once set it is kept, so a re-validation in the
        # worker does not strip a second word.
        if isinstance(data, dict) and not data.get("force_agent") and isinstance(data.get("text"), str):
            words = data["text"].split()
            if len(words) > 1 and FORCE_AGENT_WORD in {words[0].lower(), words[-1].lower()}:
                words = words[1:] if words[0].lower() == FORCE_AGENT_WORD else words[:-1]
                data = {**data, "text": " ".join(words), "force_agent": True}
        return data

    @field_validator("text")
    @classmethod
    def _not_too_long(cls, text: str) -> str:
        if len(text) > MAX_QUESTION_CHARS:
            raise ValueError(f"the question is {len(text):,} characters; the limit is {MAX_QUESTION_CHARS:,}")
        return text.strip()

    def model_post_init(self, _: object) -> None:
        if not self.id:
            key = self.origin.event_key() or f"{self.origin.kind}-{uuid.uuid4().hex}"
            object.__setattr__(self, "id", sanitize_id(key))

    @property
    def thread_key(self) -> str:
        return self.origin.thread_key(fallback=self.id)
