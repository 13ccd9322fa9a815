"""The final outbox: a question's one final message is written to Redis first, then
delivered, by whichever process holds the delivery's short lease.

``write`` is the old final claim's successor: the first Final written for a job wins,
everyone after it stays silent. The record and its entry in the pending index are one
Lua script (no crash between them leaves a final the sweep cannot find). Delivery is a
separate step that may be cut off (a worker SIGKILLed between the write and the post)
and is then finished by another process: the job's failure callback, the sweep every
worker runs (``sweep``), or a restarted worker.

Delivery is idempotent per *part* (``Delivery``): every Slack message of a final (each
split part, the uploaded file, the outcome message) is recorded under its name once
posted, and is posted with Slack ``metadata`` (event type ``askbox_final``, payload job
id and part). Slack's thread is the record that cannot be lost: every attempt, the
first included, looks there (conversations.replies) before it posts a part that is not
recorded, so neither a post whose answer was lost (a reset after Slack accepted it) nor
a record lost with a Redis failover makes a second message. Edits (the status message's
final state, reactions) are idempotent by nature and simply done again.

The lease is short (``keys.FINAL_LEASE_TTL``) and renewed while its holder delivers: a
dead deliverer blocks nobody for long, a slow one (waiting out 429s) is not taken over.
It carries a fencing token (the record's ``fence``, incremented by each lease taken):
every write of delivery state (a part's record, ``attempts``, delivered/abandoned)
checks it in Lua, so a holder whose lease lapsed (paused, cut off from Redis) and was
taken over cannot overwrite the newer holder's record, and stops before its next post.

After ``write``, and after a part is recorded, the writer waits (``WAIT``) for one
replica when the primary has any (``replicated``): what a Sentinel failover can still
lose is said in README "Exactly once".
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from redis import Redis, RedisError, ResponseError

from jobs import keys
from jobs.final import Final
from jobs.redis_text import text
from jobs.replicas import replicated

log = logging.getLogger(__name__)

EVENT_TYPE = "askbox_final"  # the Slack metadata event type of every final message part

# Attempts after which a final that keeps failing (a channel archived, a token revoked) is
# given up on, with a log line, instead of being retried by every sweep for a week.
MAX_ATTEMPTS = 8


class LeaseLost(RuntimeError):
    """A newer delivery took the lease (its fencing token is higher): this one stops."""


# KEYS: the record, the pending index. ARGV: the Final's JSON, now, the record's TTL, the
# job id. 1 when written; 0 when a final was written first (or an old final claim, a
# string, is there: posted, or lost, by a release before the outbox).
_WRITE = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' then return 0 end
if kind == 'hash' and redis.call('HEXISTS', KEYS[1], 'final') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'final', ARGV[1], 'state', 'pending', 'written_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[4])
return 1
"""
# KEYS: the record, the lease, the pending index. ARGV: the lease TTL, then _WRITE's.
# {token, attempt}, or {0, 0} when delivered, abandoned, or leased by another process.
# A record that is gone (lost with a failover, or expired) is written again from the
# final the caller holds: the delivery goes on, and looks in the thread first.
_ACQUIRE = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' then return {0, 0} end
if kind == 'none' then
  redis.call('HSET', KEYS[1], 'final', ARGV[2], 'state', 'pending', 'written_at', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[5])
end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'delivered' or state == 'abandoned' then return {0, 0} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {0, 0} end
local token = redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('SET', KEYS[2], token, 'EX', ARGV[1])
return {token, redis.call('HINCRBY', KEYS[1], 'attempts', 1)}
"""
# KEYS: the record, the pending index. ARGV: the token, the Final's JSON, now, the record's
# TTL, the job id, "1" to leave the pending index (delivered, abandoned), then field,
# value pairs. 0 (nothing written) when a newer token holds the record. A record gone
# meanwhile (a failover) is written again under this token.
_FENCED_SET = """
local fence = redis.call('HGET', KEYS[1], 'fence')
if fence and fence ~= ARGV[1] then return 0 end
if not fence then
  redis.call('HSETNX', KEYS[1], 'final', ARGV[2])
  redis.call('HSETNX', KEYS[1], 'state', 'pending')
  redis.call('HSETNX', KEYS[1], 'written_at', ARGV[3])
  redis.call('HSET', KEYS[1], 'fence', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[5])
end
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[6] == '1' then redis.call('ZREM', KEYS[2], ARGV[5]) end
return 1
"""
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
    won = replicated(
        redis,
        lambda conn: conn.eval(
            _WRITE,
            2,
            keys.final_outbox(job_id),
            keys.FINAL_OUTBOX_PENDING,
            final.model_dump_json(),
            time.time(),
            keys.CLAIM_TTL,
            job_id,
        ),
        f"the final of {job_id}",
    )
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
    return [text(i) for i in ids]


@dataclass
class Delivery:
    """One attempt at delivering a final: which parts earlier attempts already posted,
    and the fencing token every write of this attempt's state carries."""

    redis: Redis
    job_id: str
    attempt: int  # 1 for the first; more: earlier attempts were cut off (or failed)
    token: int = 0  # this attempt's fencing token (0: not leased, as in tests of one part)
    final: Final | None = None  # written again should the record be lost under it

    def posted(self, part: str) -> str | None:
        """The ts (or note) recorded for ``part``, if an attempt posted it."""
        raw = self.redis.hget(keys.final_outbox(self.job_id), f"part:{part}")
        return text(raw) if raw is not None else None

    def record(self, part: str, value: str) -> None:
        """Record a posted part (``LeaseLost`` if a newer delivery holds the record), and
        wait for a replica to hold it too."""
        written = replicated(
            self.redis,
            lambda conn: self._fenced(conn, {f"part:{part}": value}),
            f"part {part} of the final of {self.job_id}",
        )
        if not written:
            raise LeaseLost(f"job {self.job_id}: a newer delivery holds the final; part {part} not recorded")

    def holds(self) -> bool:
        """No newer delivery has taken over: checked before each post."""
        return self.redis.hget(keys.final_outbox(self.job_id), "fence") in {None, str(self.token).encode()}

    def mark(self, state: str) -> bool:
        """Delivered or abandoned, out of the pending index; False if fenced out."""
        return bool(self._fenced(self.redis, {"state": state}, done=True))

    def _fenced(self, client: Redis, fields: dict[str, str], done: bool = False) -> object:
        final = self.final.model_dump_json() if self.final is not None else ""
        pairs = [item for pair in fields.items() for item in pair]
        return client.eval(
            _FENCED_SET,
            2,
            keys.final_outbox(self.job_id),
            keys.FINAL_OUTBOX_PENDING,
            self.token,
            final,
            time.time(),
            keys.CLAIM_TTL,
            self.job_id,
            "1" if done else "0",
            *pairs,
        )

    def metadata(self, part: str) -> dict[str, object]:
        return {"event_type": EVENT_TYPE, "event_payload": {"job": self.job_id, "part": part}}


@contextmanager
def delivering(redis: Redis, job_id: str, final: Final, ttl: int = keys.FINAL_LEASE_TTL) -> Iterator[Delivery | None]:
    """Hold the delivery lease: yields a Delivery, or None when another process is
    delivering (or it is delivered). On a clean exit the final is marked delivered."""
    lease = keys.final_lease(job_id)
    token, attempt = (
        int(v)
        for v in redis.eval(
            _ACQUIRE,
            3,
            keys.final_outbox(job_id),
            lease,
            keys.FINAL_OUTBOX_PENDING,
            ttl,
            final.model_dump_json(),
            time.time(),
            keys.CLAIM_TTL,
            job_id,
        )
    )
    if not token:
        yield None
        return
    done = threading.Event()
    # Renewed while this process delivers (a post may wait for the rate budget and sleep
    # through 429s for longer than the lease): only a dead (or stalled) deliverer's lapses.
    renewer = threading.Thread(
        target=_renew_until, args=(redis, lease, str(token), ttl, done), daemon=True, name=f"final-lease-{job_id}"
    )
    renewer.start()
    delivery = Delivery(redis, job_id, attempt, token, final)
    try:
        try:
            yield delivery
        except LeaseLost:
            log.warning("job %s: a newer delivery took the final over; this one (token %d) stops", job_id, token)
            return
        except Exception:
            if attempt < MAX_ATTEMPTS:
                raise  # left pending: the sweep tries again
            log.exception("job %s: giving up on its final message after %d attempts", job_id, attempt)
            delivery.mark("abandoned")
            return
        if not delivery.mark("delivered"):
            log.warning("job %s: delivered, but a newer delivery holds the record (token %d)", job_id, token)
    finally:
        done.set()
        redis.eval(_RELEASE, 1, lease, token)


def _renew_until(redis: Redis, lease: str, token: str, ttl: int, done: threading.Event) -> None:
    while not done.wait(ttl / 3):
        try:
            redis.eval(_RENEW, 1, lease, token, ttl)
        except RedisError as exc:  # Redis away: the lease may lapse; the fence still holds
            log.warning("renewing the final lease %s failed: %s", lease, exc)


def deliver(redis: Redis, job_id: str, final: Final, publishers: Iterable[object]) -> bool:
    """Deliver ``final`` to every publisher (``post_final(final, delivery)``) under the
    lease; False when another process holds it or it is delivered. A publisher failing
    leaves the final pending for the sweep (after the others had their turn)."""
    with delivering(redis, job_id, final) as delivery:
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
        except Exception:
            log.exception("outbox sweep: delivering the final of %s failed", job_id)
    return done


def publish(
    redis: Redis,
    job_id: str,
    final: Final,
    write: Callable[[Final], bool],
    deliver: Callable[[Final], None],
    between: Callable[[], None] | None = None,
) -> bool:
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
