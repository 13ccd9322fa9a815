"""``askbox worker``: a forking RQ worker serving the askbox queues, with the sandbox reaper."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Worker
from rq.serializers import JSONSerializer

from jobs import metrics
from jobs.logs import configure_json_logging
from jobs.queue import QUEUE_NAMES, queues
from jobs.settings import JobSettings
from sandbox.errors import SandboxInfraError
from sandbox.reaper import start_periodic
from sandbox.runner import Sandbox

log = logging.getLogger(__name__)


class AskboxWorker(Worker):
    def monitor_work_horse(self, job, queue, execution):  # type: ignore[no-untyped-def]
        pid = self.horse_pid  # RQ resets it once the horse is gone
        try:
            super().monitor_work_horse(job, queue, execution)
        finally:
            metrics.mark_process_dead(pid)  # its live gauges (running sandboxes) go with it


def build_worker(redis: Redis, settings: JobSettings, names: list[str] | None = None) -> Worker:
    chosen = [q for q in queues(redis) if not names or q.name in names]
    return AskboxWorker(
        chosen,  # in priority order: RQ serves the first non-empty queue
        connection=redis,
        serializer=JSONSerializer,
        maintenance_interval=settings.maintenance_interval,
        job_monitoring_interval=settings.job_monitoring_interval,
        worker_ttl=settings.worker_ttl,
    )


def run_worker(names: list[str] | None = None, burst: bool = False, settings: JobSettings | None = None) -> bool:
    settings = settings or JobSettings()
    unknown = set(names or ()) - set(QUEUE_NAMES)
    if unknown:
        raise ValueError(f"unknown queue(s) {', '.join(sorted(unknown))}; known: {', '.join(QUEUE_NAMES)}")
    if settings.metrics_port:
        # Before anything imports prometheus_client: work-horses are forks and report here.
        metrics.setup_multiprocess(Path(tempfile.mkdtemp(prefix="askbox-metrics-")))
    configure_json_logging()
    redis = Redis.from_url(settings.redis_url)
    redis.ping()
    if settings.metrics_port:
        server = metrics.serve_metrics(settings.metrics_port, redis, QUEUE_NAMES)
        log.info("metrics on %s", server.url)
    try:
        # Orphans of a previous run of this host are removed now, then every minute.
        start_periodic(Sandbox().client, every=settings.reaper_interval,
                       on_reaped=lambda ids: metrics.REAPED.inc(len(ids)))
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
