"""``askbox worker``: a forking RQ worker serving the askbox queues, with the sandbox reaper."""

from __future__ import annotations

import logging

from redis import Redis
from rq import Worker
from rq.serializers import JSONSerializer

from jobs.queue import QUEUE_NAMES, queues
from jobs.settings import JobSettings
from sandbox.errors import SandboxInfraError
from sandbox.reaper import start_periodic
from sandbox.runner import Sandbox

log = logging.getLogger(__name__)


def build_worker(redis: Redis, settings: JobSettings, names: list[str] | None = None) -> Worker:
    chosen = [q for q in queues(redis) if not names or q.name in names]
    return Worker(
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
    redis = Redis.from_url(settings.redis_url)
    redis.ping()
    try:
        # Orphans of a previous run of this host are removed now, then every minute.
        start_periodic(Sandbox().client, every=settings.reaper_interval)
    except SandboxInfraError as exc:
        log.error("sandbox reaper not started: %s", exc)
    worker = build_worker(redis, settings, names)
    return worker.work(burst=burst, with_scheduler=True)
