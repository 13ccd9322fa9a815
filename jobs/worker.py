"""``askbox worker``: a forking RQ worker serving the askbox queues, with the sandbox reaper.

The worker decides what bot and worker must agree on, once per question: the RQ job
timeout (its own sandbox deadline plus a margin, so the sandbox always fires first) and
the number of retries (``ASKBOX_RETRIES``), stored on the job when it first takes it.

It runs only askbox's own jobs. RQ keeps a job's function and callbacks as dotted paths
and imports whatever they name (the JSON serializer keeps pickle out, not code), so a job
forged into Redis naming ``os.system`` would run as the worker, which holds the Docker
socket. Every job is checked by name before anything is imported: the question entry
point, our failure callback or none, no other callbacks, no webhooks, dependencies or
repeats (askbox sets none). A job that fails the check is logged and failed without
running it or any of its callbacks. ``AskboxJob`` repeats the check wherever RQ would
import (the work-horse, the stopped-job path, the maintenance that fails abandoned jobs).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Worker
from rq.job import Job, JobStatus
from rq.rate_limit import release_slot
from rq.serializers import JSONSerializer

from jobs import job as question_job
from jobs import metrics
from jobs.logs import configure_json_logging, log_context
from jobs.queue import JOB_FUNCTION, QUEUE_NAMES
from jobs.settings import Settings
from sandbox import images
from sandbox.egress import self_test
from sandbox.errors import SandboxInfraError
from sandbox.factory import sandbox_from_settings
from sandbox.reaper import start_periodic

log = logging.getLogger(__name__)


# Seconds before the first and second retry of an infrastructure fault.
RETRY_INTERVALS = [5, 15]
# A hash field on the job: present once a worker has decided its retries.
RETRIES_DECIDED = "askbox_retries"
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


def _refuse(job: Job, reason: str) -> RefusedJob:
    with log_context(job_id=job.id):
        log.error("refused job %s: %s; failed without running it or its callbacks", job.id, reason,
                  extra={"refused_function": _function_name(job)})
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
            raise _refuse(job, reason)
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

    def send_webhooks(self, status, *, exc_string=None) -> None:  # type: ignore[no-untyped-def]
        if self.webhooks:  # askbox registers none; a forged job's would make us POST for it
            _refuse(self, "it carries webhooks")


class AskboxWorker(Worker):
    settings: Settings
    job_class = AskboxJob

    def execute_job(self, job, queue):  # type: ignore[no-untyped-def]
        reason = refusal(job)
        if reason is not None:
            self.fail_refused(job, queue, _refuse(job, reason))
            return None
        self.decide_limits(job)
        return super().execute_job(job, queue)

    def fail_refused(self, job, queue, refused: RefusedJob) -> None:  # type: ignore[no-untyped-def]
        """Out of the queue and into the failed registry, as RQ fails a job, minus its
        callbacks, retries, webhooks and dependents: nothing of the job's choosing runs."""
        with self.connection.pipeline() as pipeline:
            job.set_status(JobStatus.FAILED, pipeline=pipeline)
            queue.failed_job_registry.add(job, ttl=job.failure_ttl, exc_string=str(refused), pipeline=pipeline)
            # A worker serving one queue moved the job to RQ's intermediate list (LMOVE).
            pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            pipeline.execute()
        release_slot(job)  # a forged rate limit must not keep a real user's slot

    def decide_limits(self, job) -> None:  # type: ignore[no-untyped-def]
        """This worker's deadline bounds this run; the first worker fixes the retries."""
        settings = self.settings
        job.timeout = int(settings.sandbox.sandbox_timeout) + settings.jobs.job_timeout_margin
        fields: dict[str, object] = {"timeout": job.timeout}
        # HSETNX: one decision per question, kept across its retries and other workers.
        if self.connection.hsetnx(job.key, RETRIES_DECIDED, settings.jobs.retries) and settings.jobs.retries:
            job.retries_left, job.retry_intervals = settings.jobs.retries, RETRY_INTERVALS
            fields.update(retries_left=job.retries_left, retry_intervals=json.dumps(RETRY_INTERVALS))
        self.connection.hset(job.key, mapping=fields)

    def monitor_work_horse(self, job, queue, execution):  # type: ignore[no-untyped-def]
        pid = self.horse_pid  # RQ resets it once the horse is gone
        try:
            super().monitor_work_horse(job, queue, execution)
        finally:
            metrics.mark_process_dead(pid)  # its live gauges (running sandboxes) go with it


def build_worker(redis: Redis, settings: Settings, names: list[str] | None = None) -> AskboxWorker:
    chosen = [name for name in QUEUE_NAMES if not names or name in names]
    worker = AskboxWorker(
        chosen,  # in priority order: RQ serves the first non-empty queue
        connection=redis,
        # JSON, never pickle. Built from names, so every queue and registry the worker
        # reads (maintenance included) uses its job_class, AskboxJob.
        serializer=JSONSerializer,
        maintenance_interval=settings.jobs.maintenance_interval,
        job_monitoring_interval=settings.jobs.job_monitoring_interval,
        worker_ttl=settings.jobs.worker_ttl,
    )
    worker.settings = settings
    return worker


def run_worker(settings: Settings, names: list[str] | None = None, burst: bool = False) -> bool:
    unknown = set(names or ()) - set(QUEUE_NAMES)
    if unknown:
        raise ValueError(f"unknown queue(s) {', '.join(sorted(unknown))}; known: {', '.join(QUEUE_NAMES)}")
    # Work-horses are forks of this process: the job they run finds the settings here.
    question_job.use_settings(settings)
    jobs = settings.jobs
    if jobs.metrics_port:
        # Before anything imports prometheus_client: work-horses are forks and report here.
        metrics.setup_multiprocess(Path(tempfile.mkdtemp(prefix="askbox-metrics-")))
    configure_json_logging(secrets=settings.secret_values())
    redis = settings.redis.client()
    redis.ping()
    if jobs.metrics_port:
        server = metrics.serve_metrics(jobs.metrics_port, redis, QUEUE_NAMES)
        log.info("metrics on %s", server.url)
    check_sandboxes(settings)
    while True:
        worker = build_worker(redis, settings, names)
        try:
            return worker.work(burst=burst, with_scheduler=True)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # RQ rides out a Redis outage while it waits for jobs, but not one that hits
            # its heartbeat or maintenance: then work() ends. Start over once Redis is back.
            log.error("lost Redis (%s); starting a new worker once it answers", exc)
            wait_for_redis(redis)


def check_sandboxes(settings: Settings) -> None:
    """Before taking questions: start the reaper (orphans of a previous run of this host
    now, then every ``ASKBOX_REAPER_INTERVAL``; idle egress proxies too), and prove the
    egress path through the real proxy. A proxy that lets a denied request through, or
    blocks an allowed one, stops the worker; Docker being down does not (questions then
    end with a clear infrastructure message, and the worker serves again once it is up)."""
    box = sandbox_from_settings(settings.sandbox)
    try:
        client = box.client
    except SandboxInfraError as exc:
        log.error("sandbox reaper and egress self-test not run: %s", exc)
        return
    start_periodic(client, every=settings.jobs.reaper_interval, on_reaped=lambda ids: metrics.REAPED.inc(len(ids)),
                   deployment=settings.sandbox.deployment, egress=box.egress)
    try:
        self_test(box, images.tag("sandbox"))
    except SandboxInfraError as exc:
        raise SystemExit(f"askbox worker: egress self-test failed, not taking questions: {exc}") from exc
    log.info("egress self-test passed")


def wait_for_redis(redis: Redis, longest: float = 10.0) -> None:
    delay = 0.5
    while True:
        try:
            redis.ping()
            return
        except (RedisConnectionError, RedisTimeoutError):
            time.sleep(delay)
            delay = min(delay * 2, longest)
