"""Where a job's progress and final message go.

Every question's progress lands in its RQ job's meta (throttled), so ``askbox ask``,
the dashboard and any other process can follow it; Slack questions also get a Slack
publisher (jobs/slack/thread_publisher.py), and ``CompositePublisher`` fans one question out
to several publishers while its final message is still written once (jobs/outbox.py).

A final is two steps: ``write_final`` (into the outbox; True for one caller per
question) and ``deliver_final`` (to every destination, under the outbox's lease, each
destination idempotent). ``final`` does both; the job crashes, in tests, in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from rq.job import Job

from jobs import keys, outbox
from jobs.final import Final
from jobs.outbox import Delivery
from jobs.question import Question
from jobs.slack.settings import SlackSettings
from jobs.slack.thread_publisher import slack_publisher_for
from sandbox.agents.events import AgentEvent, Started, TextDelta, ToolFinished, ToolStarted

log = logging.getLogger(__name__)

MAX_PROGRESS_LINES = 50
MAX_PREVIEW_CHARS = 2000


class Publisher(Protocol):
    def started(self) -> None: ...

    def event(self, event: AgentEvent) -> None: ...

    def final(self, final: Final) -> bool:
        """Write, then deliver, the final message; False when another process wrote it."""
        ...

    def write_final(self, final: Final) -> bool: ...

    def deliver_final(self, final: Final) -> None: ...


class MetaPublisher:
    def __init__(self, job: Job, interval: float = 1.0) -> None:
        self.job = job
        self.interval = interval
        self.started_at = time.monotonic()
        self._saved_at = 0.0
        self.shown = False  # anything beyond "started" reached the user
        self._marked = False  # keys.progress_shown is set

    def started(self) -> None:
        self.job.meta.update(state="running", progress=[], preview="")
        self._save(force=True)

    def event(self, event: AgentEvent) -> None:
        meta = self.job.meta
        first = "first_event_at" not in meta
        if first:
            meta["first_event_at"] = time.time()  # queue-to-agent latency, for metrics and benchmarks
        if isinstance(event, Started):
            meta["model"] = event.model
        elif isinstance(event, ToolStarted):
            line = f"[{time.monotonic() - self.started_at:6.1f}s] {event.summary}"
            meta["progress"] = (meta.get("progress", []) + [line])[-MAX_PROGRESS_LINES:]
            self.shown = True
        elif isinstance(event, ToolFinished) and not event.ok:
            line = f"[{time.monotonic() - self.started_at:6.1f}s] failed: {event.summary}"
            meta["progress"] = (meta.get("progress", []) + [line])[-MAX_PROGRESS_LINES:]
        elif isinstance(event, TextDelta):
            meta["preview"] = (meta.get("preview", "") + event.text)[-MAX_PREVIEW_CHARS:]
            self.shown = True
        if self.shown and not self._marked:
            # Before any other publisher can show it (this one comes first): from here
            # on, a failure ends the question instead of retrying it.
            self.job.connection.set(keys.progress_shown(self.job.id), 1, ex=keys.CLAIM_TTL)
            self._marked = True
        self._save(force=first)

    def final(self, final: Final) -> bool:
        return outbox.publish(self.job.connection, self.job.id, final, self.write_final, self.deliver_final)

    def write_final(self, final: Final) -> bool:
        return outbox.write(self.job.connection, self.job.id, final)

    def deliver_final(self, final: Final) -> None:
        outbox.deliver(self.job.connection, self.job.id, final, [self])

    def post_final(self, final: Final, delivery: Delivery | None = None) -> None:
        """The final into the job's meta (done again by a takeover: the same value)."""
        self.job.meta.update(state="done", final=final.model_dump(mode="json"))
        self.job.meta.setdefault("final_at", time.time())
        self._save(force=True)

    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._saved_at >= self.interval:
            self.job.save_meta()
            self._saved_at = now


class _PostsFinal(Protocol):
    def started(self) -> None: ...
    def event(self, event: AgentEvent) -> None: ...
    def post_final(self, final: Final, delivery: Delivery | None = None) -> None: ...


class CompositePublisher:
    """Fans a question's progress out to several publishers and writes its final once.

    The first publisher's ``write_final()`` writes the outbox; only when it won is the
    final delivered to all of them (``post_final()``, under one delivery lease)."""

    def __init__(self, first: Any, *others: _PostsFinal) -> None:
        self.publishers: tuple[Any, ...] = (first, *others)
        self.job: Job = first.job

    @property
    def shown(self) -> bool:
        return any(getattr(p, "shown", False) for p in self.publishers)

    def started(self) -> None:
        for publisher in self.publishers:
            _quietly(publisher.started)

    def event(self, event: AgentEvent) -> None:
        for publisher in self.publishers:
            _quietly(publisher.event, event)

    def final(self, final: Final) -> bool:
        return outbox.publish(self.job.connection, self.job.id, final, self.write_final, self.deliver_final)

    def write_final(self, final: Final) -> bool:
        first, *others = self.publishers
        if first.write_final(final):
            return True
        for publisher in others:
            _quietly(getattr(publisher, "close", lambda: None))
        return False

    def deliver_final(self, final: Final) -> None:
        outbox.deliver(self.job.connection, self.job.id, final, self.publishers)

    def close(self) -> None:
        for publisher in self.publishers:
            _quietly(getattr(publisher, "close", lambda: None))


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    # One destination failing must not take the others, or the job, down with it.
    try:
        fn(*args)
    except Exception:
        log.exception("publisher %s failed", getattr(fn, "__qualname__", fn))


def publisher_for(question: Question, job: Job, slack: SlackSettings) -> Publisher:
    """Every question's publisher: its RQ meta, and its Slack thread when it came from Slack."""
    meta = MetaPublisher(job)
    to_slack = slack_publisher_for(question, job, slack)  # None unless it came from Slack and a token is set
    # The MetaPublisher comes first: its write_final() writes the outbox, then all deliver.
    return CompositePublisher(meta, to_slack) if to_slack is not None else meta
