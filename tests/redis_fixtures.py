"""A real Redis for tests: db 15 of the local server, emptied before and after.

Import the fixture into a test module with
`from tests.redis_fixtures import redis_client  # noqa: F401`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.conftest import unavailable

# db 15, not 0: flushing it must never touch data a developer keeps in the default db.
TEST_DB = 15
REDIS_URL = f"redis://127.0.0.1:6379/{TEST_DB}"


@pytest.fixture()
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        unavailable("Redis", exc)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()
