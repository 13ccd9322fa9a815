"""The job: one queued question, answered by one agent in one sandbox, ending in one final message.

The question runs through the pipeline every entry point runs (jobs/pipeline/); what is
the queue's alone is here: RQ's entry point, a final left by an earlier run of the job, a
cancel before it started, the job's meta and Slack thread as its destination, retries
(only while nothing was shown) and the failure callback.

The work-horse running it is a fork of the worker, which loaded the settings tree once at
start and handed it here (``use_settings``).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from redis import Redis
from rq import get_current_job
from rq.job import Job

from gateway.client import SessionState
from jobs import keys, metrics, outbox, tracing
from jobs.crash_points import crash_point
from jobs.destinations import Publisher, publisher_for
from jobs.final import Final
from jobs.logs import log_context
from jobs.pipeline import Destination, Run, answer
from jobs.pipeline.stages import finalize
from jobs.question import Question
from jobs.settings import Settings
from jobs.slack import agent_session as slack_session
from sandbox.agents.events import AgentError, AgentEvent, Result

log = logging.getLogger(__name__)


_settings: Settings | None = None


def use_settings(settings: Settings) -> None:
    """The worker's settings tree, for the jobs its work-horses run."""
    global _settings
    _settings = settings


def current_settings() -> Settings:
    """The tree the worker handed over; loaded here once only if a plain RQ worker runs us."""
    global _settings
    if _settings is None:
        _settings = Settings.load()
    return _settings


def answer_question(data: dict[str, Any]) -> dict[str, Any]:
    """The RQ entry point (JSON in, JSON out: workers use RQ's JSON serializer)."""
    job = get_current_job()
    assert job is not None, "answer_question runs inside an RQ job"
    question = Question.model_validate(data)
    if job.started_at and job.enqueued_at:
        metrics.QUEUE_WAIT.observe((job.started_at - job.enqueued_at).total_seconds())
    try:
        with (
            log_context(job_id=job.id, repo=question.repo, user=question.origin.user, thread=question.thread_key),
            tracing.question(job.meta, job.id, job.enqueued_at, job.started_at),
        ):
            final = run_question(question, job, current_settings())
    finally:
        tracing.flush()  # the work-horse exits without atexit hooks
    return {"kind": final.kind, "duration": final.duration}


def run_question(question: Question, job: Job, settings: Settings) -> Final:
    """The question through the pipeline (jobs/pipeline/), after what only a queued job
    can meet: a final written by an earlier run of it, or a cancel before it started."""
    redis: Redis = job.connection
    publisher = publisher_for(question, job, settings.slack)
    earlier = outbox.read(redis, job.id)
    if earlier is not None:
        # A run that wrote its final and died before delivering it (RQ retried the
        # abandoned job): finish that delivery, answer nothing again.
        outbox.publish(redis, job.id, earlier, publisher.write_final, publisher.deliver_final)
        return earlier
    # Slack's agent session: processing (and its stop button) from here; the final message
    # sets it active or closed, whoever delivers it (jobs/slack/agent_session.py).
    slack_session.start(question, job, settings.slack)
    run = Run(
        question,
        settings,
        redis,
        QueueDestination(job, publisher, settings),
        run_id=job.id,
        allow_paths=settings.jobs.allow_repo_paths and question.origin.kind == "terminal",
        labels={"job": job.id, "user": question.origin.user, "worker": job.worker_name or ""},
    )  # reaped when that worker is gone
    who = run.cancelled_by()
    if who is not None:
        with run.held:
            return finalize(run, Final(kind="cancelled", text=f"Cancelled by {who} before it started."))
    return answer(run)


class QueueDestination(Destination):
    """A queued question's destinations: its job's meta and, from Slack, its thread
    (jobs/destinations.py), with the one final written to the outbox first."""

    def __init__(self, job: Job, publisher: Publisher, settings: Settings) -> None:
        self.job = job
        self.publisher = publisher
        self.crash_at = settings.jobs.test_crash_at

    def pinned(self, where: dict[str, Any]) -> None:
        self.job.meta["pin"] = where  # the status line's "On it: `web` at `a1b2c3d` with …" (jobs/slack/progress.py)

    def started(self) -> None:
        self.publisher.started()

    def event(self, event: AgentEvent) -> None:
        self.publisher.event(event)

    def ended(self, terminal: Result | AgentError, usage: SessionState | None) -> None:
        if usage is not None:
            self.job.meta["usage"] = usage.model_dump(exclude={"stop_reason"})
            self.job.save_meta()

    def steps(self) -> list[str]:
        return list(self.job.meta.get("progress", []))

    def retry(self) -> bool:
        if getattr(self.publisher, "shown", True) or not self.job.retries_left:
            return False
        getattr(self.publisher, "close", lambda: None)()  # stop its sender thread now
        return True  # RQ retries: nothing reached the user yet

    def final(self, final: Final) -> None:
        # Into the outbox, then delivered: a worker dying in between (the test-only crash
        # point) leaves it for the failure callback or the sweep, never lost or doubled.
        if not outbox.publish(
            self.job.connection,
            self.job.id,
            final,
            self.publisher.write_final,
            self.publisher.deliver_final,
            between=lambda: crash_point(self.crash_at, "after-outbox", with_parent=True),
        ):
            log.warning("job %s: a final message was already written; not posting %s", self.job.id, final.kind)


def on_job_failure(job: Job, connection: Redis, exc_type: type, exc: BaseException, tb: object) -> None:
    """RQ failure callback: the job raised (RQ's timeout included), or its worker died
    (AbandonedJobError); the worker calls it too when its work-horse died under it
    (``WorkHorseDied``, jobs/worker.py), where RQ itself calls nothing.

    A retry is only for a failure before anything was shown (``keys.progress_shown``):
    a second run would show its progress again under the first's. So once the thread
    showed progress the retries are dropped here (RQ decides right after this callback,
    on this very job object) and the question ends with one final message saying what
    happened. When RQ will retry, stay silent."""
    if job.retries_left and connection.exists(keys.progress_shown(job.id)):
        log.warning(
            "job %s failed (%s) after its progress was shown: ending it, not retrying", job.id, exc_type.__name__
        )
        job.retries_left = 0
    if job.retries_left:
        return
    question = Question.model_validate(job.args[0])
    if exc_type.__name__ in ("AbandonedJobError", "WorkHorseDied"):
        text = f"The worker running this question stopped before it finished. Please ask again. Reference: {job.id}"
        kind: Literal["infra", "timeout"] = "infra"
    elif exc_type.__name__ == "JobTimeoutException":
        text = (
            f"This question took longer than askbox allows one question ({job.timeout} s) and was stopped. "
            f"Please ask again. Reference: {job.id}"
        )
        kind = "timeout"
    else:
        text = f"Something went wrong on our side ({exc}). Reference: {job.id}"
        kind = "infra"
    metrics.count_question(kind)  # "timeout" or "infra"
    publisher_for(question, job, current_settings().slack).final(Final(kind=kind, text=text, reference=job.id))
