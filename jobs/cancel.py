"""Cancel a question from any process: the Slack button, ``askbox cancel``, an operator."""

from __future__ import annotations

from typing import Literal

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import JobStatus

from jobs import keys, outbox
from jobs.destinations import publisher_for
from jobs.final import Final
from jobs.question import Question
from jobs.queue import fetch
from jobs.slack.settings import SlackSettings

CancelResult = Literal["cancelled", "stopping", "finished", "unknown"]
_NOT_STARTED = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.RATE_LIMITED}


def cancel(redis: Redis, job_id: str, by: str, slack: SlackSettings) -> CancelResult:
    """``slack`` is the caller's Slack section: a question that never ran gets its final
    message from the canceller. ``cancelled``: it never ran and its final message says so; ``stopping``: its worker
    sees the request within a second and kills the container; ``finished``: too late."""
    try:
        job = fetch(redis, job_id)
    except NoSuchJobError:
        return "unknown"
    status = job.get_status()
    if status in {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}:
        return "finished"
    if outbox.written(redis, job_id):
        return "finished"  # its final is written (the job is wrapping up): nothing left to stop
    # The key first: a job that starts right now still sees it before running anything.
    redis.set(keys.cancel_request(job_id), by, ex=keys.CLAIM_TTL, nx=True)
    if status in _NOT_STARTED:
        job.cancel()
        question = Question.model_validate(job.args[0])
        publisher_for(question, job, slack).final(Final(kind="cancelled", text=f"Cancelled by {by} before it started."))
        return "cancelled"
    return "stopping"
