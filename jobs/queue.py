"""Questions onto RQ: priority queues, per-user concurrency, caps on waiting (in all and per user),
exactly one job per question.

The job's RQ timeout and retries are not decided here: the enqueuing process (the bot)
does not know the worker's sandbox deadline. The worker that first takes the job sets
both from its own settings and stores them on the job (``jobs.worker``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis import Redis, WatchError
from rq import Callback, Queue, RateLimit
from rq.job import Job, JobStatus
from rq.rate_limit import RateLimitRegistry
from rq.serializers import JSONSerializer

from jobs import claims, keys, tracing
from jobs.question import Priority, Question
from jobs.settings import JobSettings

PRIORITIES: tuple[Priority, ...] = ("high", "default", "low")  # served in this order
QUEUE_NAMES = tuple(f"askbox-{p}" for p in PRIORITIES)
JOB_FUNCTION = "jobs.job.answer_question"


class QueueFull(RuntimeError):
    pass


class ClaimPending(RuntimeError):
    """Another process holds the question's pending claim and has made no job yet: it is
    creating it right now, or it died doing so (its claim lapses within
    ``pending_claim_ttl``). The caller must not report the question as handled."""


@dataclass(frozen=True)
class Enqueued:
    job: Job
    position: int | None  # questions ahead of it; None while it waits for the asker's own
    duplicate: bool = False  # the same question (e.g. a retried Slack event) was already queued
    waiting: int | None = None  # questions waiting when it was queued (the bot's "position")


def queues(redis: Redis) -> list[Queue]:
    # JSON, never pickle: whoever can write to Redis must not be able to run code in a worker.
    return [Queue(name, connection=redis, serializer=JSONSerializer) for name in QUEUE_NAMES]


def _registry(key: str) -> RateLimitRegistry:
    """RQ's registry of a rate-limit key, for its key names only: its constructor registers
    four Lua scripts (hashing each), which the bot's every enqueue would pay for."""
    registry = object.__new__(RateLimitRegistry)
    registry.key = key
    return registry


def waiting(redis: Redis) -> int:
    """Questions queued or held back by a per-user RateLimit: two round trips, however
    many users (the bot counts this before every enqueue, inside Slack's 3 s)."""
    limits = [
        _registry(key.decode() if isinstance(key, bytes) else key)
        for key in redis.smembers(RateLimitRegistry.rl_keys_key)
    ]
    with redis.pipeline(transaction=False) as pipe:
        for queue in queues(redis):
            pipe.llen(queue.key)
        for registry in limits:
            pipe.zcard(registry.rate_limited_key)
        return sum(int(n) for n in pipe.execute())


def _user_limit_key(question: Question) -> str:
    return f"user:{question.origin.team or '-'}:{question.origin.user}"


def user_waiting(redis: Redis, question: Question) -> int:
    """The asker's questions not yet started: held back by RQ's per-user RateLimit, or let
    through and still queued (at most ``user_concurrency`` of those, so few to look at)."""
    registry = _registry(_user_limit_key(question))
    with redis.pipeline(transaction=False) as pipe:
        pipe.zrange(registry.allowed_key, 0, -1)
        pipe.zcard(registry.rate_limited_key)
        allowed, held = pipe.execute()
    if not allowed:
        return int(held)
    with redis.pipeline(transaction=False) as pipe:
        for job_id in allowed:
            pipe.hget(Job.key_for(job_id.decode() if isinstance(job_id, bytes) else job_id), "status")
        statuses = pipe.execute()
    return int(held) + sum(1 for status in statuses if status is not None and status.decode() == JobStatus.QUEUED.value)


def exists(redis: Redis, job_id: str) -> bool:
    return bool(Job.exists(job_id, connection=redis))


def fetch(redis: Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer)


def enqueue(
    redis: Redis, question: Question, settings: JobSettings, wait: float = 5.0, locate: bool = True
) -> Enqueued:
    """Queue ``question`` once. ``locate=False``: no ``position`` (its round trips), only
    ``waiting`` (the bot, inside Slack's 3 s)."""
    # RQ's unique=True does not combine with RateLimit, so claim the question id ourselves:
    # exactly one process, for one delivery of an event, gets to create the job. The claim
    # is pending until the MULTI/EXEC that creates the job makes it long (jobs/claims.py).
    claim = keys.question_claim(question.id)
    deadline = time.monotonic() + wait
    while True:
        if exists(redis, question.id):
            job = fetch(redis, question.id)
            return Enqueued(job, position(redis, job), duplicate=True)
        token = claims.take(redis, claim, settings.pending_claim_ttl)
        if token is not None:
            break
        if time.monotonic() > deadline:
            raise ClaimPending(f"question {question.id} is being queued by another process")
        time.sleep(0.05)
    try:
        ahead = waiting(redis)
        if ahead >= settings.max_waiting:
            raise QueueFull(f"{settings.max_waiting} questions are already waiting; please ask again in a few minutes.")
        # One person must not fill the queue for everyone (the global cap alone would let them).
        if user_waiting(redis, question) >= settings.user_max_waiting:
            raise QueueFull(
                f"You already have {settings.user_max_waiting} questions waiting; please ask again once "
                "one of them has started (or cancel one)."
            )
        job = _enqueue(redis, question, settings, claim, token)
    except BaseException:
        claims.release(redis, claim, token)  # nothing was queued: a later delivery may try again
        raise
    return Enqueued(job, position(redis, job) if locate else None, waiting=ahead)


def _enqueue(redis: Redis, question: Question, settings: JobSettings, claim: str, token: str) -> Job:
    queue = queues(redis)[PRIORITIES.index(question.priority)]
    job = queue.create_job(
        JOB_FUNCTION,
        args=(question.model_dump(mode="json"),),
        job_id=question.id,
        result_ttl=keys.CLAIM_TTL,
        failure_ttl=keys.CLAIM_TTL,
        on_failure=Callback("jobs.job.on_job_failure"),
        rate_limit=RateLimit(
            key=_user_limit_key(question),
            concurrency=settings.user_concurrency,
        ),
        meta={
            "state": "queued",
            "user": question.origin.user,
            "repo": question.repo,
            "thread": question.thread_key,
            "progress": [],
            tracing.META_KEY: tracing.carrier(),
        },
    )
    # The job and the long claim in one MULTI/EXEC, only while our pending claim still
    # holds (WATCH): a crash before EXEC leaves neither, after it both. RQ's public
    # enqueue_job refuses a pipeline for rate-limited jobs (a later save on the same
    # pipeline would undo the promotion; we save nothing after), so this takes the path
    # RQ's own scheduler takes for them, ``_enqueue_rate_limited_job(job, pipeline=...)``.
    with redis.pipeline() as pipe:
        pipe.watch(claim)
        if pipe.get(claim) != token.encode():
            raise ClaimPending(f"the pending claim on question {question.id} lapsed before its job was made")
        pipe.multi()
        pipe.sadd(queue.redis_queues_keys, queue.key)
        queue._enqueue_rate_limited_job(job, pipeline=pipe)
        pipe.set(claim, claims.CONFIRMED, ex=keys.CLAIM_TTL)
        try:
            pipe.execute()
        except WatchError:
            raise ClaimPending(f"the pending claim on question {question.id} lapsed before its job was made") from None
    return job


def where(redis: Redis, enqueued: Enqueued) -> str:
    """Where a just-enqueued question stands, in words for the asker: its job may already
    have started (a worker was idle), be held back behind the asker's own running
    questions (RQ's per-user RateLimit), or wait in line."""
    if enqueued.position is not None:
        return "next in line" if enqueued.position == 0 else f"{enqueued.position} ahead of it"
    status = enqueued.job.get_status(refresh=True)
    if status == JobStatus.RATE_LIMITED:
        return "waiting for your other questions to finish"
    if status == JobStatus.STARTED:
        return "started"
    return "queued" if status in (None, JobStatus.QUEUED) else status.value


def position(redis: Redis, job: Job) -> int | None:
    """How many questions are ahead of this one, across the priorities served before it."""
    if job.get_status() != JobStatus.QUEUED:
        return None
    ahead = 0
    for queue in queues(redis):
        if queue.name == job.origin:
            pos = job.get_position()
            return ahead + pos if pos is not None else None
        ahead += queue.count
    return None
