"""Prometheus metrics of the worker, aggregated over RQ's short-lived work-horses.

RQ forks a work-horse per job, and the metrics of a job are recorded in that child. So
prometheus_client runs in multiprocess mode: every process writes its values to mmap-ed
files in ``PROMETHEUS_MULTIPROC_DIR`` and the worker's parent process, which outlives the
horses, serves ``/metrics`` aggregated over all the files.

Ordering constraint: prometheus_client chooses between in-process and file-backed values
when ``prometheus_client.values`` is first imported, from the environment. So:

1. the process that serves metrics calls ``setup_multiprocess(dir)`` first, before
   anything imports prometheus_client (this module does not import it at import time,
   and creates the metric objects below only when one is first used, for this reason);
2. then ``serve_metrics(...)``, then it starts the RQ worker; the horses inherit the
   environment and the mode;
3. after each horse exits, the parent calls ``mark_process_dead(pid)`` so live gauges
   (running sandboxes) stop counting a dead process, e.g. in a Worker subclass::

       def monitor_work_horse(self, job, queue, execution):
           pid = self.horse_pid  # RQ resets it to 0 before returning
           try:
               super().monitor_work_horse(job, queue, execution)
           finally:
               metrics.mark_process_dead(pid)

``setup_multiprocess`` empties the directory, so one directory belongs to one process tree
(one worker, or one ``rq worker-pool`` parent), never shared by independent workers.
Without ``setup_multiprocess`` everything still works in-process (tests, ``SimpleWorker``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from jobs import keys

if TYPE_CHECKING:
    from http.server import HTTPServer

    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.core import Metric
    from redis import Redis

    QUESTIONS: Counter
    QUEUE_WAIT: Histogram
    CONTAINER_START: Histogram
    AGENT_TIME: Histogram
    RUNNING_SANDBOXES: Gauge
    RETRIES: Counter
    REAPED: Counter

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

Outcome = Literal["answer", "cached", "cancelled", "timeout", "oom", "agent_error", "rejected", "infra"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
Vote = Literal["up", "down"]
VOTES: tuple[str, ...] = get_args(Vote)

_METRIC_NAMES = frozenset(
    {"QUESTIONS", "QUEUE_WAIT", "CONTAINER_START", "AGENT_TIME", "RUNNING_SANDBOXES", "RETRIES", "REAPED"}
)
_lock = threading.Lock()
_metrics: dict[str, Any] | None = None


def _build() -> dict[str, Any]:
    from prometheus_client import Counter, Gauge, Histogram

    questions = Counter("askbox_questions", "Questions that ended, by outcome.", ["outcome"])
    # Every known label value exists from the start at 0, so rate() and alerts see the
    # first occurrence instead of a series appearing out of nowhere.
    for outcome in OUTCOMES:
        questions.labels(outcome=outcome)
    return {
        "QUESTIONS": questions,
        "QUEUE_WAIT": Histogram(
            "askbox_queue_wait_seconds",
            "From enqueue to a worker starting the job.",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
        ),
        "CONTAINER_START": Histogram(
            "askbox_container_start_seconds",
            "From asking Docker for a sandbox to it running.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
        ),
        "AGENT_TIME": Histogram(
            "askbox_agent_seconds",
            "Agent run time inside the sandbox, start to final event.",
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800),
        ),
        # livesum: the sum over processes still alive, so a horse killed mid-job does not
        # leave a sandbox counted forever (its file goes in mark_process_dead).
        "RUNNING_SANDBOXES": Gauge(
            "askbox_running_sandboxes", "Sandbox containers running now.", multiprocess_mode="livesum"
        ),
        "RETRIES": Counter("askbox_retries", "Jobs retried after an infrastructure fault."),
        "REAPED": Counter("askbox_reaped_containers", "Orphaned sandbox containers removed by the reaper."),
    }


def _ensure_metrics() -> dict[str, Any]:
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = _build()
            globals().update(_metrics)  # later lookups no longer go through __getattr__
        return _metrics


def __getattr__(name: str) -> Any:
    if name in _METRIC_NAMES:
        return _ensure_metrics()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def count_question(outcome: Outcome) -> None:
    """Counts one finished question; refuses unknown outcomes (labels must stay a closed set)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; known: {', '.join(OUTCOMES)}")
    _ensure_metrics()["QUESTIONS"].labels(outcome=outcome).inc()


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def setup_multiprocess(dir: Path) -> Path:
    """Turns on multiprocess mode with ``dir`` (created, emptied of stale ``*.db`` files).

    Must run before prometheus_client is imported anywhere in the process: afterwards the
    mode is fixed, and this raises rather than let metrics silently stay per-process.
    """
    if _metrics is not None:
        raise RuntimeError("setup_multiprocess() must run before any askbox metric is used")
    values = sys.modules.get("prometheus_client.values")
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError(
            "prometheus_client was imported before setup_multiprocess(): call it first thing "
            f"in the worker's main process, or set {MULTIPROC_ENV} in its environment"
        )
    dir = dir.resolve()
    dir.mkdir(parents=True, exist_ok=True)
    # Files of a previous run's pids would be summed in forever (or, for live gauges,
    # until a new process happens to get the same pid).
    for stale in dir.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(dir)
    return dir


def mark_process_dead(pid: int) -> None:
    """Drops a dead process's live gauges; call in the parent after a work-horse exits."""
    if not pid or not multiprocess_enabled():
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


class QueueDepthCollector:
    """``askbox_queue_depth{queue}``: read from Redis at scrape time, so it is exact and
    needs no process to keep it up to date."""

    NAME = "askbox_queue_depth"
    HELP = "Jobs waiting in each askbox queue."

    def __init__(self, redis: Redis, queue_names: Sequence[str]) -> None:
        from rq import Queue
        from rq.serializers import JSONSerializer

        self._redis = redis
        # RQ's own key naming, read as a plain list length: no job is ever deserialized.
        self._keys = {name: Queue(name, connection=redis, serializer=JSONSerializer).key for name in queue_names}

    def _family(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        return GaugeMetricFamily(self.NAME, self.HELP, labels=["queue"])

    def describe(self) -> Iterable[Metric]:
        # Without describe() the registry would call collect(), i.e. Redis, on register.
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        from redis import RedisError

        family = self._family()
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for key in self._keys.values():
                    pipe.llen(key)
                depths = pipe.execute()
        except RedisError as exc:
            # The rest of /metrics stays useful; the missing series is the signal.
            log.warning("queue depth unavailable: %s", exc)
        else:
            for name, depth in zip(self._keys, depths):
                family.add_metric([name], float(depth))
        yield family


class FeedbackCollector:
    """``askbox_feedback_total{vote}``: votes are clicked in the bot process, counted in
    Redis, and read here at scrape time."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def describe(self) -> Iterable[Metric]:
        yield self._family()

    @staticmethod
    def _family() -> Any:
        from prometheus_client.core import CounterMetricFamily

        return CounterMetricFamily("askbox_feedback", "Votes on answers (helpful / not helpful).", labels=["vote"])

    def collect(self) -> Iterator[Metric]:
        from redis import RedisError

        family = self._family()
        try:
            counts = self._redis.hgetall(keys.FEEDBACK_COUNTS)  # written by the bot's button handler
        except RedisError as exc:
            log.warning("feedback counts unavailable: %s", exc)
        else:
            for vote in VOTES:
                family.add_metric([vote], float(counts.get(vote.encode(), 0)))
        yield family


class RedisServerCollector:
    """``askbox_redis_server_info{run_id, role}``: the Redis server this worker's commands
    reach, read at scrape time. Its ``run_id`` changes when another server answers (a
    Sentinel failover) or the same one restarted, which is what the Redis failover alert
    (ops/prometheus/alerts.yml) counts."""

    NAME = "askbox_redis_server"

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def _family(self) -> Any:
        from prometheus_client.core import InfoMetricFamily

        return InfoMetricFamily(self.NAME, "The Redis server askbox's commands reach.", labels=["run_id", "role"])

    def describe(self) -> Iterable[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        from redis import RedisError

        family = self._family()
        try:
            server, replication = self._redis.info("server"), self._redis.info("replication")
        except RedisError as exc:
            log.warning("Redis server info unavailable: %s", exc)
        else:
            family.add_metric([str(server.get("run_id", "")), str(replication.get("role", ""))], {})
        yield family


class BudgetCollector:
    """``askbox_budget_used_ratio{scope}``: the largest share of its daily budget (tokens or
    USD, whichever is further along) that any one user or channel has used today (UTC),
    read from the gateway's daily totals in Redis at scrape time; absent when that scope
    has no budget. The "budget near its limit" alert reads it."""

    NAME = "askbox_budget_used_ratio"

    def __init__(self, redis: Redis, limits: dict[str, tuple[float, float]]) -> None:
        self._redis = redis
        self._limits = {scope: pair for scope, pair in limits.items() if any(pair)}  # (tokens, usd); 0 = none

    def _family(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        return GaugeMetricFamily(
            self.NAME, "Largest share of a daily budget one user or channel has used today.", labels=["scope"]
        )

    def describe(self) -> Iterable[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        from redis import RedisError

        family = self._family()
        try:
            for scope, (tokens, usd) in self._limits.items():
                highest = 0.0
                for key in self._redis.scan_iter(match=keys.daily_usage(scope, "*"), count=500):
                    used_tokens, used_usd = self._redis.hmget(key, "tokens", "cost_usd")
                    shares = [
                        float(used_tokens or 0) / tokens if tokens else 0.0,
                        float(used_usd or 0) / usd if usd else 0.0,
                    ]
                    highest = max(highest, *shares)
                family.add_metric([scope], highest)
        except RedisError as exc:
            log.warning("budget use unavailable: %s", exc)
        yield family


class AnswerFeedbackCollector:
    """``askbox_answer_feedback_total{verdict,repo,model}``: one verdict per person per
    answer (jobs/feedback.py), counted in Redis by the bot, read here at scrape time."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def describe(self) -> Iterable[Metric]:
        yield self._family()

    @staticmethod
    def _family() -> Any:
        from prometheus_client.core import CounterMetricFamily

        return CounterMetricFamily(
            "askbox_answer_feedback",
            "Verdicts on answers, one per person per answer.",
            labels=["verdict", "repo", "model"],
        )

    def collect(self) -> Iterator[Metric]:
        from redis import RedisError

        from jobs.feedback import labelled_counts

        family = self._family()
        try:
            counts = labelled_counts(self._redis)
        except RedisError as exc:
            log.warning("feedback verdicts unavailable: %s", exc)
        else:
            for (verdict, repo, model), count in sorted(counts.items()):
                family.add_metric([verdict, repo, model], float(count))
        yield family


class _Forward:
    """Exposes another registry's metrics (the process's own, when not multiprocess)."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return self._source.collect()


@dataclass
class MetricsServer:
    port: int
    httpd: HTTPServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def serve_metrics(
    port: int, redis: Redis, queue_names: Sequence[str], budgets: dict[str, tuple[float, float]] | None = None
) -> MetricsServer:
    """Serves ``/metrics`` on 127.0.0.1:``port`` (0: a free port, see ``.port``) in a daemon
    thread: all processes' metrics when multiprocess, else this process's, plus queue depth.

    Loopback only: whatever listens on the host must not be reachable from sandboxes or
    the network; Prometheus runs beside it or scrapes through a proxy.
    """
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

    _ensure_metrics()  # every series exists from the first scrape, at 0
    registry = CollectorRegistry()
    if multiprocess_enabled():
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry)
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(QueueDepthCollector(redis, queue_names))
    registry.register(FeedbackCollector(redis))
    registry.register(AnswerFeedbackCollector(redis))
    registry.register(RedisServerCollector(redis))
    registry.register(BudgetCollector(redis, budgets or {}))
    httpd, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    return MetricsServer(port=httpd.server_port, httpd=httpd, thread=thread)
