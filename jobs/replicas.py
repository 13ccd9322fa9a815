"""Writes a Sentinel failover must not lose: made, then ``WAIT``ed for on one replica.

Redis replicates asynchronously: a primary acknowledges a write before any replica has
it, and a failover promotes a replica that may lack the primary's last writes. For the
writes askbox's exactly-once rests on (a Slack message's confirmed claim, a final in the
outbox and its posted parts) the writer waits, after the write, until one replica holds
it (``WAIT 1``, up to ``REPLICA_WAIT_MS``) whenever the primary has replicas; Sentinel
promotes the most up-to-date replica, so an acknowledged write survives the failover.
A replica that does not answer in time is logged and the work goes on: askbox prefers
answering to stalling every question while a replica is down; what is then at stake is
in README "Exactly once" (``min-replicas-to-write`` makes the primary refuse instead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from redis import Redis

log = logging.getLogger(__name__)

REPLICA_WAIT_MS = 1000  # far above a healthy replica's lag (well under a millisecond here)
T = TypeVar("T")


def replicated(redis: Redis, write: Callable[[Redis], T], what: str) -> T:
    """``write(client)``, then, if the primary has replicas, WAIT until one holds it.

    Both on one connection (``Redis.client()``): WAIT waits for the writes made on the
    connection it is sent on, and a pooled client could send it on another."""
    with redis.client() as conn:
        result = write(conn)
        replicas = int(conn.info("replication").get("connected_slaves", 0) or 0)
        if replicas and int(conn.wait(1, REPLICA_WAIT_MS)) < 1:
            log.warning(
                "%s is on no replica after %d ms (of %d): a failover now could lose it", what, REPLICA_WAIT_MS, replicas
            )
    return result
