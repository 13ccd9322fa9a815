"""Claims that survive a crash: short while pending, long only together with their work.

A claim taken with a long TTL before the work it guards gives at-most-once: a process
killed in between leaves a claim that turns every redelivery into "duplicate". Here a
claim is first *pending*, holding a random token with a short TTL
(``ASKBOX_PENDING_CLAIM_TTL``); it becomes the long claim (``keys.CLAIM_TTL``) only in the
same MULTI/EXEC as the work it guards (``jobs/queue.py``), or by a compare-and-set once
the work is done (``confirm``). A process that dies while the claim is pending leaves
a key that lapses within seconds: the next delivery is handled afresh.

redis-py has no compare-and-set for a key's value, hence the two small Lua scripts.
"""

from __future__ import annotations

import secrets

from redis import Redis

from jobs import keys

CONFIRMED = b"1"  # the value of a long claim (what claims taken before pending ones hold)

_CONFIRM = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('set', KEYS[1], '1', 'EX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def take(redis: Redis, key: str, ttl: int) -> str | None:
    """A pending claim on ``key`` for ``ttl`` seconds: its token, or None if held."""
    token = "pending-" + secrets.token_hex(8)
    return token if redis.set(key, token, nx=True, ex=ttl) else None


def holds(redis: Redis, key: str, token: str) -> bool:
    return redis.get(key) == token.encode()


def confirmed(redis: Redis, key: str) -> bool:
    """The long claim is held: the work it guards is done (or atomically under way)."""
    return redis.get(key) == CONFIRMED


def confirm(redis: Redis, key: str, token: str, ttl: int = keys.CLAIM_TTL) -> bool:
    """Turn our pending claim into the long one; False if it lapsed (or was never ours)."""
    return bool(redis.eval(_CONFIRM, 1, key, token, ttl))


def release(redis: Redis, key: str, token: str) -> None:
    """Give our pending claim back (nothing was done); someone else's is left alone."""
    redis.eval(_RELEASE, 1, key, token)
