"""The state a question's Slack parts share: what the agent did (``Progress``) and the
thread it is shown in (``SlackThread``); every part (``ThreadPart``) holds both.

``Progress`` is written by the job's event loop and read by the sender thread, always
under its lock. ``SlackThread`` belongs to the sender thread until it is joined, then to
the final message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from rq.job import Job

from jobs import keys
from jobs.question import Question
from jobs.redis_text import text
from jobs.slack.calls import SlackCalls
from jobs.slack.options import SlackOptions
from sandbox.agents.events import AgentEvent, Started, TextDelta, ToolFinished, ToolStarted


@dataclass
class Step:
    summary: str
    ok: bool | None = None  # None while running
    detail: str = ""


@dataclass
class Progress:
    """The agent's work so far, as the user sees it: its last steps and the answer text."""

    clock: Callable[[], float]
    lines: int  # steps kept for display
    lock: threading.Lock = field(default_factory=threading.Lock)
    begun: float | None = None
    steps: list[Step] = field(default_factory=list)  # the last ``lines`` steps
    running: dict[str, Step] = field(default_factory=dict)  # by call id
    step_count: int = 0
    text: str = ""  # the answer so far
    version: int = 0  # bumped by every visible change
    closed: bool = False

    def begin(self) -> None:
        with self.lock:
            self.begun = self.clock()
            self.version += 1

    def record(self, event: AgentEvent) -> bool:
        """Take in one event; True when the user would see a difference."""
        with self.lock:
            if self.closed:
                return False
            if self.begun is None:
                self.begun = self.clock()
            if isinstance(event, ToolStarted):
                step = Step(event.summary)
                self.steps = (self.steps + [step])[-self.lines :]
                self.running[event.call_id] = step
                self.step_count += 1
            elif isinstance(event, ToolFinished):
                finished = self.running.pop(event.call_id, None)
                if finished is not None:
                    finished.ok, finished.detail = event.ok, event.detail
            elif isinstance(event, TextDelta):
                self.text += event.text
            elif not isinstance(event, Started):
                return False  # diagnostics change nothing the user sees
            self.version += 1
        return True

    def close(self) -> None:
        with self.lock:
            self.closed = True


@dataclass
class SlackThread:
    """Where a question is answered, and what of it has been shown there."""

    job_id: str
    channel: str
    thread_ts: str | None
    message_ts: str | None  # the question itself, which carries the reactions
    status_ts: str | None  # the status message; None once deleted (or never posted)
    asker: str
    team: str | None
    streaming: bool  # switched off when Slack refuses a stream
    shown: bool = False  # a tool step or answer text reached the user
    headline: str | None = None  # "On it: `web` at `a1b2c3d` with gemini-2.5-flash", once the job pinned it

    @classmethod
    def of(cls, question: Question, job: Job, streaming: bool) -> SlackThread:
        origin = question.origin
        if origin.kind != "slack" or not origin.channel:
            raise ValueError("SlackPublisher needs a question from Slack")
        return cls(
            job_id=job.id,
            channel=origin.channel,
            thread_ts=origin.thread_ts or origin.message_ts,
            message_ts=origin.message_ts,
            status_ts=_status_ts(question, job),
            asker=origin.user,
            team=origin.team,
            streaming=streaming,
        )

    @property
    def is_dm(self) -> bool:
        return self.channel.startswith("D")


@dataclass(eq=False)
class ThreadPart:
    """One part of a question's thread (status message, stream, final message…): all
    parts share one thread, one progress, the team's budgeted calls and the options."""

    thread: SlackThread
    progress: Progress
    calls: SlackCalls
    options: SlackOptions


def _status_ts(question: Question, job: Job) -> str | None:
    """The bot's status message: in the question's origin (bots before issue 19), under
    ``keys.status_message`` (posted after the ack), or in the job's meta."""
    ts = job.meta.get("slack_status_ts") or getattr(question.origin, "status_ts", None)
    if ts:
        return str(ts)
    try:
        # Posted after the bot's acknowledgement (jobs/slack/status_owner.py).
        owner = job.connection.get(keys.status_message(job.id))
        if owner is not None and not text(owner).startswith("pending-"):
            return text(owner)
        raw = job.connection.hget(job.key, "meta")
        meta = job.serializer.loads(raw) if isinstance(raw, bytes) else {}
    except Exception:  # noqa: BLE001 - no meta is the same as no status message
        return None
    return str(meta["slack_status_ts"]) if meta.get("slack_status_ts") else None
