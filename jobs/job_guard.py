"""Which RQ jobs a worker runs: askbox's own, checked by name before anything is imported.

RQ keeps a job's function and callbacks as dotted paths and imports whatever they name
(the JSON serializer keeps pickle out, not code), so a job forged into Redis naming
``os.system`` would run as the worker, which holds the Docker socket. A job is ours when
it names the question entry point, our failure callback or none, no other callbacks, and
no webhooks, dependencies or repeats (askbox sets none). ``AskboxJob`` repeats the check
wherever RQ would import (the work-horse, the stopped-job path, the maintenance that fails
abandoned jobs); the worker fails a refused job without running it or its callbacks.
"""

from __future__ import annotations

import logging
from typing import Any

from rq.job import Job

from jobs.logs import log_context
from jobs.queue import JOB_FUNCTION

log = logging.getLogger(__name__)

# The only callbacks a job may name, by kind: RQ imports each name it finds on a job.
OUR_CALLBACKS = {"success": frozenset(), "failure": frozenset({"jobs.job.on_job_failure"}), "stopped": frozenset()}


class RefusedJob(RuntimeError):
    """A job that is not askbox's: nothing it names is imported."""


def refusal(job: Job) -> str | None:
    """Why ``job`` is not one of ours, or None. Reads names only; imports nothing."""
    try:
        # JSON: decoding the job's data runs no code of the job's choosing.
        function, instance = job.func_name, job.instance
    except Exception as exc:  # noqa: BLE001 - DeserializationError, or data of the wrong shape
        return f"its data cannot be read ({type(exc).__name__})"
    if function != JOB_FUNCTION or instance is not None:
        on = f" on {instance!r}" if instance is not None else ""
        return f"function {function!r}{on} is not {JOB_FUNCTION}"
    for kind, allowed in OUR_CALLBACKS.items():
        # The name RQ would import; its public property imports it to answer.
        name = getattr(job, f"_{kind}_callback_name")
        if name and name not in allowed:
            return f"{kind} callback {name!r} is not ours"
    # None of these imports code, but askbox sets none of them: webhooks would make the
    # worker POST wherever the job says, a repeat re-runs a question, and a dependency
    # ties it to jobs we did not make.
    if job.webhooks:
        return f"it carries webhooks ({', '.join(sorted({w.url for w in job.webhooks}))})"
    if job.repeats_left:
        return "it asks to be repeated"
    if job._dependency_ids:
        return f"it depends on other jobs ({', '.join(job._dependency_ids)})"
    return None


def refuse(job: Job, reason: str) -> RefusedJob:
    with log_context(job_id=job.id):
        log.error(
            "refused job %s: %s; failed without running it or its callbacks",
            job.id,
            reason,
            extra={"refused_function": _function_name(job)},
        )
    return RefusedJob(f"refused by askbox: {reason}")


def _function_name(job: Job) -> str:
    try:
        return str(job.func_name)
    except Exception:  # noqa: BLE001 - unreadable data; the refusal says so
        return "<unreadable>"


def _checked_first(name: str) -> property:
    """RQ's property ``name`` (which imports what the job names), run only for our jobs."""
    imports = getattr(Job, name).fget

    def get(job: Job) -> object:
        if (reason := refusal(job)) is not None:
            raise refuse(job, reason)
        return imports(job)

    return property(get)


class AskboxJob(Job):
    """A job that re-checks itself wherever RQ would import what it names.

    The worker refuses foreign jobs before forking; this covers RQ's other paths to the
    same imports: the stopped callback, and the failure callback that maintenance runs
    for a job left in the started registry (which a forger can write as well).
    """

    func = _checked_first("func")
    success_callback = _checked_first("success_callback")
    failure_callback = _checked_first("failure_callback")
    stopped_callback = _checked_first("stopped_callback")

    def send_webhooks(self, status: Any, *, exc_string: str | None = None) -> None:
        if self.webhooks:  # askbox registers none; a forged job's would make us POST for it
            refuse(self, "it carries webhooks")
