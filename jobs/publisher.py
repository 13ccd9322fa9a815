"""Where a job's progress and final message go.

Every question's progress lands in its RQ job's meta (throttled), so ``askbox ask``,
the dashboard and any other process can follow it; Slack questions also get a Slack
publisher (see jobs/slack_publisher.py, when present).
"""

from __future__ import annotations

import time
from typing import Protocol

from rq.job import Job

from jobs.final import Final, claim_final
from sandbox.events import AgentEvent, Started, TextDelta, ToolFinished, ToolStarted

MAX_PROGRESS_LINES = 50
MAX_PREVIEW_CHARS = 2000


class Publisher(Protocol):
    def started(self) -> None: ...

    def event(self, event: AgentEvent) -> None: ...

    def final(self, final: Final) -> bool:
        """Post the final message; False when another process already posted it."""
        ...


class MetaPublisher:
    def __init__(self, job: Job, interval: float = 1.0) -> None:
        self.job = job
        self.interval = interval
        self.started_at = time.monotonic()
        self._saved_at = 0.0
        self.shown = False  # anything beyond "started" reached the user

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
        self._save(force=first)

    def final(self, final: Final) -> bool:
        if not claim_final(self.job.connection, self.job.id):
            return False
        self.job.meta.update(state="done", final=final.model_dump(mode="json"), final_at=time.time())
        self._save(force=True)
        return True

    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._saved_at >= self.interval:
            self.job.save_meta()
            self._saved_at = now
