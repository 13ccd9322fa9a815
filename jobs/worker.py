"""``askbox worker``: a forking RQ worker serving the askbox queues, with the sandbox reaper.

The worker decides what bot and worker must agree on, once per question: the RQ job
timeout (its own sandbox deadline plus a margin, so the sandbox always fires first) and
the number of retries (``ASKBOX_RETRIES``), stored on the job when it first takes it.
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
from rq.serializers import JSONSerializer

from jobs import job as question_job
from jobs import metrics
from jobs.logs import configure_json_logging
from jobs.queue import QUEUE_NAMES, queues
from jobs.settings import Settings
from sandbox.errors import SandboxInfraError
from sandbox.reaper import start_periodic
from sandbox.runner import Sandbox

log = logging.getLogger(__name__)


# Seconds before the first and second retry of an infrastructure fault.
RETRY_INTERVALS = [5, 15]
# A hash field on the job: present once a worker has decided its retries.
RETRIES_DECIDED = "askbox_retries"


class AskboxWorker(Worker):
    settings: Settings

    def execute_job(self, job, queue):  # type: ignore[no-untyped-def]
        self.decide_limits(job)
        return super().execute_job(job, queue)

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
    chosen = [q for q in queues(redis) if not names or q.name in names]
    worker = AskboxWorker(
        chosen,  # in priority order: RQ serves the first non-empty queue
        connection=redis,
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
    try:
        # Orphans of a previous run of this host are removed now, then every minute.
        start_periodic(Sandbox().client, every=jobs.reaper_interval,
                       on_reaped=lambda ids: metrics.REAPED.inc(len(ids)), deployment=settings.sandbox.deployment)
    except SandboxInfraError as exc:
        log.error("sandbox reaper not started: %s", exc)
    while True:
        worker = build_worker(redis, settings, names)
        try:
            return worker.work(burst=burst, with_scheduler=True)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # RQ rides out a Redis outage while it waits for jobs, but not one that hits
            # its heartbeat or maintenance: then work() ends. Start over once Redis is back.
            log.error("lost Redis (%s); starting a new worker once it answers", exc)
            wait_for_redis(redis)


def wait_for_redis(redis: Redis, longest: float = 10.0) -> None:
    delay = 0.5
    while True:
        try:
            redis.ping()
            return
        except (RedisConnectionError, RedisTimeoutError):
            time.sleep(delay)
            delay = min(delay * 2, longest)
