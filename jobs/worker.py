"""``askbox worker``: a forking RQ worker serving the askbox queues, with the sandbox reaper
and the repository refresher (jobs/repos/refresher.py).

The worker decides what bot and worker must agree on, once per question: the RQ job
timeout (``Settings.job_timeout``: every phase's bound from its own settings, so the
sandbox's deadline and the fetch's fire first) and the number of retries
(``ASKBOX_RETRIES``), stored on the job when it first takes it. A retry is only for a
fault before anything was shown: a job that timed out or whose work-horse died after
the thread showed progress ends with one final message instead (jobs/job.py).

It runs only askbox's own jobs (jobs/job_guard.py): a job that is not is failed before
anything it names is imported.
"""

from __future__ import annotations

import json
import logging
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT
from rq import Worker
from rq.job import JobStatus
from rq.rate_limit import release_slot
from rq.serializers import JSONSerializer

from jobs import job as question_job
from jobs import metrics, outbox, start_checks
from jobs.destinations import publisher_for
from jobs.final import Final
from jobs.job_guard import AskboxJob, RefusedJob, refusal, refuse
from jobs.logs import configure_json_logging
from jobs.question import Question
from jobs.queue import QUEUE_NAMES, fetch
from jobs.repos import resolve_repo
from jobs.repos.refresher import start_refresher
from jobs.settings import Settings
from jobs.worker_pubsub import PromptUnsubscribe
from sandbox import images, labels, owner
from sandbox.egress import self_test
from sandbox.errors import SandboxInfraError
from sandbox.factory import sandbox_from_settings
from sandbox.reaper import reap, start_periodic
from sandbox.runner import Sandbox

log = logging.getLogger(__name__)


# Seconds before the first and second retry of an infrastructure fault.
RETRY_INTERVALS = [5, 15]
# A hash field on the job: present once a worker has decided its retries.
RETRIES_DECIDED = "askbox_retries"


class WorkHorseDied(RuntimeError):
    """The work-horse running a question ended without finishing it (killed, crashed)."""


class AskboxWorker(PromptUnsubscribe, Worker):
    settings: Settings
    job_class = AskboxJob
    reap_now: Callable[[], object] | None = None  # removes this host's orphaned sandboxes

    def request_stop(self, signum, frame):
        """SIGTERM: RQ's warm shutdown (the running question finishes), bounded by
        ``ASKBOX_SHUTDOWN_GRACE``: then the work-horse is killed and its sandbox removed
        (the question is retried elsewhere, or ends with one message)."""
        if self.horse_pid and self._stop_requested is False:
            threading.Thread(
                target=self._end_after_grace, args=(self.horse_pid,), daemon=True, name="shutdown-grace"
            ).start()
        super().request_stop(signum, frame)

    def _end_after_grace(self, horse: int) -> None:
        time.sleep(self.settings.jobs.shutdown_grace)
        if self.horse_pid != horse:
            return  # the question finished within the grace
        log.warning("shutdown grace of %.0f s over: stopping the running question", self.settings.jobs.shutdown_grace)
        self._grace_over = True
        self.kill_horse(signal.SIGKILL)  # its sandbox is removed once it is reaped (monitor_work_horse)

    _grace_over = False

    def _remove_orphans(self) -> None:
        if self.reap_now is None:
            return
        try:
            self.reap_now()
        except Exception:
            log.exception("removing the sandbox after the shutdown grace failed")

    def execute_job(self, job, queue):
        reason = refusal(job)
        if reason is not None:
            self.fail_refused(job, queue, refuse(job, reason))
            return None
        self.decide_limits(job)
        return super().execute_job(job, queue)

    def fail_refused(self, job, queue, refused: RefusedJob) -> None:
        """Out of the queue and into the failed registry, as RQ fails a job, minus its
        callbacks, retries, webhooks and dependents: nothing of the job's choosing runs."""
        with self.connection.pipeline() as pipeline:
            job.set_status(JobStatus.FAILED, pipeline=pipeline)
            queue.failed_job_registry.add(job, ttl=job.failure_ttl, exc_string=str(refused), pipeline=pipeline)
            # A worker serving one queue moved the job to RQ's intermediate list (LMOVE).
            pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            pipeline.execute()
        release_slot(job)  # a forged rate limit must not keep a real user's slot

    def decide_limits(self, job) -> None:
        """This worker's deadline bounds this run; the first worker fixes the retries."""
        settings = self.settings
        job.timeout = settings.job_timeout()
        fields: dict[FieldT, EncodableT] = {"timeout": job.timeout}
        # HSETNX: one decision per question, kept across its retries and other workers.
        if self.connection.hsetnx(job.key, RETRIES_DECIDED, settings.jobs.retries) and settings.jobs.retries:
            job.retries_left, job.retry_intervals = settings.jobs.retries, RETRY_INTERVALS
            fields.update(retries_left=job.retries_left, retry_intervals=json.dumps(RETRY_INTERVALS))
        self.connection.hset(job.key, mapping=fields)

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage):
        """The work-horse died under its job (a kill, the shutdown grace, RQ's own kill
        past the timeout): RQ retries it, or fails it silently, without the failure
        callback. Ours decides instead, as for any failure: no retry once progress was
        shown, and one final message when there is no retry (jobs/job.py)."""
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        try:
            job.get_meta(refresh=True)  # the work-horse's progress, not the parent's stale copy
            question_job.on_job_failure(
                job, self.connection, WorkHorseDied, WorkHorseDied(f"work-horse ended with {ret_val}"), None
            )
        except Exception:
            log.exception("job %s: ending it after its work-horse died failed", job.id)

    def monitor_work_horse(self, job, queue, execution):
        pid = self.horse_pid  # RQ resets it once the horse is gone
        try:
            super().monitor_work_horse(job, queue, execution)
        finally:
            metrics.mark_process_dead(pid)  # its live gauges (running sandboxes) go with it
            if self._grace_over:  # the horse is reaped now: its sandbox is an orphan
                self._remove_orphans()


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
    """Serve questions until stopped; ``StartCheckFailed`` when none could be answered here."""
    unknown = set(names or ()) - set(QUEUE_NAMES)
    if unknown:
        raise ValueError(f"unknown queue(s) {', '.join(sorted(unknown))}; known: {', '.join(QUEUE_NAMES)}")
    jobs = settings.jobs
    if jobs.metrics_port:
        # Before anything imports prometheus_client: work-horses are forks and report here.
        metrics.setup_multiprocess(Path(tempfile.mkdtemp(prefix="askbox-metrics-")))
    configure_json_logging(secrets=settings.secret_values())
    redis = settings.redis.client()
    redis.ping()
    box = sandbox_from_settings(settings.sandbox)
    settings = start_checks.check(settings, box).settings  # Docker, images, the agent's key
    # Work-horses are forks of this process: the job they run finds the settings here.
    question_job.use_settings(settings)
    if jobs.metrics_port:
        gateway = settings.gateway  # the daily budgets, as the worker checks them before a question
        budgets: dict[str, tuple[float, float]] = {
            "user": (gateway.budget_user_tokens, gateway.budget_user_usd),
            "channel": (gateway.budget_channel_tokens, gateway.budget_channel_usd),
        }
        server = metrics.serve_metrics(jobs.metrics_port, redis, QUEUE_NAMES, budgets)
        log.info("metrics on %s", server.url)
    reap_now = check_sandboxes(settings, box, redis)
    start_repo_refresher(settings)
    start_outbox_sweep(redis, settings)
    try:
        while True:
            worker = build_worker(redis, settings, names)
            worker.reap_now = reap_now
            try:
                done = worker.work(burst=burst, with_scheduler=True)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                # RQ rides out a Redis outage while it waits for jobs, but not one that hits
                # its heartbeat or maintenance: then work() ends. Start over once Redis is back.
                log.error("lost Redis (%s); starting a new worker once it answers", exc)
                wait_for_redis(redis)
                continue
            # A signal asked for it (RQ's warm shutdown: idle, or after the running job).
            if burst or worker._stop_requested or worker._shutdown_requested_date is not None:
                return done
            # RQ also ends work() itself ("found an unhandled exception, quitting") when
            # Redis fails under a running job's heartbeat: not a stop anyone asked for.
            log.error("the worker stopped without being asked to (Redis lost?); starting a new one once Redis answers")
            wait_for_redis(redis)
    finally:
        clean_up_on_exit(settings, box, redis)


def owner_worker_alive(redis: Redis):
    """The reaper's extra knowledge: a question's sandbox whose RQ worker is gone from
    Redis (its registration expires with its heartbeat) is an orphan, whatever host name
    it was started under. A compose worker recreated by `down`/`up` has a new host name,
    so the owner rule alone (same host, dead pid) never applies to its predecessor's."""
    prefix = Worker.redis_worker_namespace_prefix

    def is_alive(container_labels: dict[str, str]) -> bool | None:
        name = container_labels.get(labels.WORKER)
        if not name or owner.is_alive_here(container_labels.get(labels.OWNER, "")) is not None:
            return None  # not a question's run, or its owner is on this host: the pid decides
        try:
            return None if redis.exists(prefix + name) else False
        except RedisError:
            return None  # cannot tell: leave it to the deadline

    return is_alive


def clean_up_on_exit(settings: Settings, box: Sandbox, redis: Redis) -> None:
    """The worker stops: its dead runs' sandboxes and the proxies no run uses go now, not
    at some later worker's reaper pass (there may be none: `docker compose down`)."""
    try:
        client = box.client
        reaped = reap(client, settings.sandbox.deployment, is_alive=owner_worker_alive(redis))
        removed = box.egress.remove_unused(client) if box.egress is not None else []
    except Exception as exc:  # noqa: BLE001 - exiting anyway: say what was left
        log.warning("clean-up at exit incomplete: %s", exc)
        return
    if reaped or removed:
        log.info("at exit: removed %d sandbox(es) and %d unused egress proxy(ies)", len(reaped), len(removed))


def check_sandboxes(settings: Settings, box: Sandbox, redis: Redis) -> Callable[[], object] | None:
    """Before taking questions: start the reaper (orphans of a previous run of this host
    now, then every ``ASKBOX_REAPER_INTERVAL``; idle egress proxies too), and prove the
    egress path through the real proxy. A proxy that lets a denied request through, or
    blocks an allowed one, stops the worker. Docker was reachable at the start checks; a
    daemon gone since then ends questions with a clear infrastructure message, and the
    worker serves again once it is back."""
    try:
        client = box.client
    except SandboxInfraError as exc:
        log.error("sandbox reaper and egress self-test not run: %s", exc)
        return None
    start_periodic(
        client,
        every=settings.jobs.reaper_interval,
        on_reaped=lambda ids: metrics.REAPED.inc(len(ids)),
        deployment=settings.sandbox.deployment,
        egress=box.egress,
        is_alive=owner_worker_alive(redis),
    )
    try:
        self_test(box, images.tag("sandbox"))
    except SandboxInfraError as exc:
        raise SystemExit(f"askbox worker: egress self-test failed, not taking questions: {exc}") from exc
    log.info("egress self-test passed")
    deployment = settings.sandbox.deployment
    return lambda: reap(client, deployment=deployment, grace=0.0)


def start_outbox_sweep(redis: Redis, settings: Settings) -> threading.Thread:
    """Every ``ASKBOX_OUTBOX_SWEEP_INTERVAL``: deliver the finals that were written but
    not delivered (their worker died in between, or Slack failed them), on any worker."""
    every = settings.jobs.outbox_sweep_interval

    def deliver(job_id: str, final: Final) -> None:
        job = fetch(redis, job_id)
        question = Question.model_validate(job.args[0])
        publisher_for(question, job, settings.slack).deliver_final(final)
        log.info("outbox sweep: delivered the final of %s", job_id)

    def run() -> None:
        while True:
            time.sleep(every)
            try:
                outbox.sweep(redis, deliver, older_than=every)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning("outbox sweep skipped: %s", exc)  # Redis is back by the next round
            except Exception:
                log.exception("outbox sweep failed")

    thread = threading.Thread(target=run, name="outbox-sweep", daemon=True)
    thread.start()
    return thread


def start_repo_refresher(settings: Settings) -> None:
    """Fetch every git remote of ASKBOX_REPOS on schedule, and remove idle snapshots."""
    jobs = settings.jobs
    repos = [resolve_repo(name, jobs.repos, allow_paths=False) for name in jobs.repos]
    start_refresher(
        repos,
        jobs.repo_mirrors,
        jobs.repo_snapshots,
        every=jobs.repo_refresh,
        idle=jobs.repo_snapshot_idle,
        fetch_timeout=jobs.repo_fetch_timeout,
    )


def wait_for_redis(redis: Redis, longest: float = 10.0) -> None:
    delay = 0.5
    while True:
        try:
            redis.ping()
            return
        except (RedisConnectionError, RedisTimeoutError):
            time.sleep(delay)
            delay = min(delay * 2, longest)
