"""The final outbox: a question's one final message is written to Redis first, then
delivered, by whichever process holds the delivery's short lease.

``write`` is the old final claim's successor: the first Final written for a job wins
(HSETNX), everyone after it stays silent. Delivery is a separate step that may be cut
off (a worker SIGKILLed between the write and the post) and is then finished by another
process: the job's failure callback, the sweep every worker runs (``sweep``), or a
restarted worker. Delivery is idempotent per *part* (``Delivery``): every Slack message
of a final (each split part, the uploaded file, the outcome message) is recorded under
its name once posted, and is posted with Slack ``metadata`` (event type
``askbox_final``, payload job id and part) so a process taking over a delivery that was
cut off between Slack's answer and the record finds it in the thread
(conversations.replies) instead of posting it again. Edits (the status message's final
state, reactions) are idempotent by nature and simply done again.

The lease is short (``keys.FINAL_LEASE_TTL``) and renewed while its holder delivers: a
dead deliverer blocks nobody for long, a slow one (waiting out 429s) is not taken over.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from redis import Redis, RedisError, ResponseError

from jobs import keys
from jobs.final import Final

log = logging.getLogger(__name__)

EVENT_TYPE = "askbox_final"  # the Slack metadata event type of every final message part

# Attempts after which a final that keeps failing (a channel archived, a token revoked) is
# given up on, with a log line, instead of being retried by every sweep for a week.
MAX_ATTEMPTS = 8

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('expire', KEYS[1], ARGV[2])
end
return 0
"""


def write(redis: Redis, job_id: str, final: Final) -> bool:
    """Write the question's final message; True for exactly one caller per question."""
    key = keys.final_outbox(job_id)
    with redis.pipeline() as pipe:
        pipe.hsetnx(key, "final", final.model_dump_json())
        pipe.hsetnx(key, "state", "pending")
        pipe.hsetnx(key, "written_at", time.time())
        pipe.expire(key, keys.CLAIM_TTL)
        try:
            won = pipe.execute()[0]
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            return False  # the final claim of a release before the outbox: posted (or lost) then
    if won:
        redis.zadd(keys.FINAL_OUTBOX_PENDING, {job_id: time.time()}, nx=True)
    return bool(won)


def written(redis: Redis, job_id: str) -> bool:
    """A final is written (it may still be on its way): live progress must stop, or an
    edit could land on top of the final state."""
    return bool(redis.exists(keys.final_outbox(job_id)))


def read(redis: Redis, job_id: str) -> Final | None:
    try:
        raw = redis.hget(keys.final_outbox(job_id), "final")
    except ResponseError:
        return None  # an old final claim (a string): nothing to deliver
    return Final.model_validate_json(raw) if raw else None


def delivered(redis: Redis, job_id: str) -> bool:
    return redis.hget(keys.final_outbox(job_id), "state") == b"delivered"


def undelivered(redis: Redis, older_than: float) -> list[str]:
    """Jobs whose final was written more than ``older_than`` seconds ago and not delivered."""
    ids = redis.zrangebyscore(keys.FINAL_OUTBOX_PENDING, "-inf", time.time() - older_than, start=0, num=100)
    return [i.decode() for i in ids]


@dataclass
class Delivery:
    """One attempt at delivering a final: which parts earlier attempts already posted."""

    redis: Redis
    job_id: str
    attempt: int  # 1 for the first; more means an earlier attempt was cut off

    @property
    def takeover(self) -> bool:
        return self.attempt > 1

    def posted(self, part: str) -> str | None:
        """The ts (or note) recorded for ``part``, if an attempt posted it."""
        raw = self.redis.hget(keys.final_outbox(self.job_id), f"part:{part}")
        return raw.decode() if raw is not None else None

    def record(self, part: str, value: str) -> None:
        self.redis.hset(keys.final_outbox(self.job_id), f"part:{part}", value)

    def metadata(self, part: str) -> dict[str, object]:
        return {"event_type": EVENT_TYPE, "event_payload": {"job": self.job_id, "part": part}}


@contextmanager
def delivering(redis: Redis, job_id: str, ttl: int = keys.FINAL_LEASE_TTL) -> Iterator[Delivery | None]:
    """Hold the delivery lease: yields a Delivery, or None when another process is
    delivering (or it is delivered). On a clean exit the final is marked delivered."""
    if redis.hget(keys.final_outbox(job_id), "state") in {b"delivered", b"abandoned"}:
        yield None
        return
    token = secrets.token_hex(8)
    lease = keys.final_lease(job_id)
    if not redis.set(lease, token, nx=True, ex=ttl):
        yield None
        return
    done = threading.Event()
    # Renewed while this process delivers (a post may wait for the rate budget and sleep
    # through 429s for longer than the lease): only a dead deliverer's lease lapses.
    renewer = threading.Thread(target=_renew_until, args=(redis, lease, token, ttl, done), daemon=True,
                               name=f"final-lease-{job_id}")
    renewer.start()
    try:
        attempt = int(redis.hincrby(keys.final_outbox(job_id), "attempts", 1))
        try:
            yield Delivery(redis, job_id, attempt)
        except Exception:
            if attempt < MAX_ATTEMPTS:
                raise  # left pending: the sweep tries again
            log.exception("job %s: giving up on its final message after %d attempts", job_id, attempt)
            _mark(redis, job_id, "abandoned")
            return
        _mark(redis, job_id, "delivered")
    finally:
        done.set()
        redis.eval(_RELEASE, 1, lease, token)


def _renew_until(redis: Redis, lease: str, token: str, ttl: int, done: threading.Event) -> None:
    while not done.wait(ttl / 3):
        try:
            redis.eval(_RENEW, 1, lease, token, ttl)
        except RedisError as exc:  # Redis away: the lease may lapse, the part records still hold
            log.warning("renewing the final lease %s failed: %s", lease, exc)


def _mark(redis: Redis, job_id: str, state: str) -> None:
    with redis.pipeline() as pipe:
        pipe.hset(keys.final_outbox(job_id), "state", state)
        pipe.zrem(keys.FINAL_OUTBOX_PENDING, job_id)
        pipe.execute()


def deliver(redis: Redis, job_id: str, final: Final, publishers: Iterable[object]) -> bool:
    """Deliver ``final`` to every publisher (``post_final(final, delivery)``) under the
    lease; False when another process holds it or it is delivered. A publisher failing
    leaves the final pending for the sweep (after the others had their turn)."""
    with delivering(redis, job_id) as delivery:
        if delivery is None:
            return False
        failed: Exception | None = None
        for publisher in publishers:
            try:
                publisher.post_final(final, delivery)  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 - one destination must not stop the others
                log.warning("job %s: delivering the final to %s failed: %s", job_id, type(publisher).__name__, exc)
                failed = exc
        if failed is not None:
            raise failed
    return True


def sweep(redis: Redis, deliver: Callable[[str, Final], None], older_than: float = keys.FINAL_LEASE_TTL) -> list[str]:
    """Deliver every final outboxed ``older_than`` ago and not delivered yet (its worker
    died between the write and the post). ``deliver(job_id, final)`` takes the lease."""
    done = []
    for job_id in undelivered(redis, older_than):
        final = read(redis, job_id)
        if final is None or redis.hget(keys.final_outbox(job_id), "state") != b"pending":
            redis.zrem(keys.FINAL_OUTBOX_PENDING, job_id)  # expired, or delivered by now
            continue
        try:
            deliver(job_id, final)
            done.append(job_id)
        except Exception:  # noqa: BLE001 - one broken job must not stop the others
            log.exception("outbox sweep: delivering the final of %s failed", job_id)
    return done


def publish(redis: Redis, job_id: str, final: Final, write: Callable[[Final], bool],
            deliver: Callable[[Final], None], between: Callable[[], None] | None = None) -> bool:
    """A publisher's ``final()``: write ``final``, then deliver it; True if ours was
    written. When another final was written first, that one's delivery is finished
    instead (a no-op once delivered, or while another process holds the lease): any
    process reaching a question's end completes what a dead one began."""
    if write(final):
        if between is not None:
            between()
        chosen = final
    else:
        earlier = read(redis, job_id)
        if earlier is None:
            return False
        chosen = earlier
    try:
        deliver(chosen)
    except Exception as exc:  # noqa: BLE001 - written is enough: the sweep delivers it later
        log.warning("job %s: final message not delivered yet (%s); the outbox sweep will", job_id, exc)
    return chosen is final


def parts_in_thread(messages: Iterable[dict], job_id: str) -> dict[str, str]:
    """The parts of ``job_id``'s final already in a thread: part name -> message ts."""
    found = {}
    for message in messages:
        meta = message.get("metadata") or {}
        payload = meta.get("event_payload") or {}
        if isinstance(payload, str):
            payload = json.loads(payload)
        if meta.get("event_type") == EVENT_TYPE and payload.get("job") == job_id:
            found[str(payload.get("part"))] = str(message.get("ts"))
    return found
