"""The connection classes of askbox's Sentinel-managed Redis clients (sync and asyncio).

Two gaps in redis-py 8.1's ``SentinelManagedConnection``, both found by
tests/integration/test_sentinel.py, closed here:

- Reconnecting asks the Sentinels only in ``connect()``. A command retried after a lost
  connection reconnects in ``send_packed_command`` through ``connect_check_health()``,
  i.e. to the *last* master's address: a command in flight at a failover knocked on the
  dead master until its retries ran out ("Error 111 connecting to …" after 20 s, while
  every new command found the new master). Here that reconnect asks the Sentinels once
  per attempt; the command's own ``Retry`` does the waiting between attempts.
- (sync only) ``read_response`` defaults ``disconnect_on_error`` to False where the plain
  connection defaults it to True, so an exception raised *into* a read (RQ raises them
  from signal handlers: a worker's warm shutdown while it blocks for a job, a
  work-horse's job timeout) left the connection pooled with its reply unread, and the
  next command read that reply as its own ("Wrong number of response items from
  pipeline execution" in RQ's ``register_death``).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.sentinel import SentinelManagedConnection as AsyncSentinelManagedConnection
from redis.sentinel import SentinelManagedConnection


class ClosingSentinelConnection(SentinelManagedConnection):
    def read_response(
        self, disable_decoding: bool = False, *, disconnect_on_error: bool | None = True, **kwargs: Any
    ) -> Any:
        return super().read_response(disable_decoding, disconnect_on_error=disconnect_on_error, **kwargs)

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self._sock:
            self._connect_retry()  # where the master is now, not where it was
        super().send_packed_command(command, check_health)


class AsyncRediscoveringSentinelConnection(AsyncSentinelManagedConnection):
    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self.is_connected:
            await self._connect_retry()  # where the master is now, not where it was
        await super().send_packed_command(command, check_health)
