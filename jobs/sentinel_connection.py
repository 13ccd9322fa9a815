"""The connection class every Sentinel-managed (sync) Redis client of askbox uses.

redis-py's ``SentinelManagedConnection.read_response`` defaults ``disconnect_on_error``
to False, where the plain ``Connection`` defaults it to True (redis-py 8.1). So an
exception raised *into* a read, rather than by it, leaves the connection in the pool
with its reply still unread, and the next command on it reads that reply as its own
("Wrong number of response items from pipeline execution"). RQ raises exactly such
exceptions from signal handlers: a worker's warm shutdown (SIGTERM while it blocks
waiting for a job) and a work-horse's job timeout. Found by tests/integration/
test_sentinel.py (a worker stopped after the failover crashed in ``register_death``);
with the plain connection's default restored, the interrupted connection is closed.
"""

from __future__ import annotations

from typing import Any

from redis.sentinel import SentinelManagedConnection


class ClosingSentinelConnection(SentinelManagedConnection):
    def read_response(self, disable_decoding: bool = False, *, disconnect_on_error: bool | None = True,
                      **kwargs: Any) -> Any:
        return super().read_response(disable_decoding, disconnect_on_error=disconnect_on_error, **kwargs)
