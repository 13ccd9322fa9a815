"""Thread memory and answer cache against a real Redis (and a real crash of one)."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from jobs.cache import AnswerCache, CachedAnswer, normalize_question
from jobs.memory import Conversation, ThreadMemory
from jobs.prompt import Turn
from tests.conftest import REDIS_TEST_URL, unavailable
from tests.integration.pipeline_helpers import free_port

pytestmark = pytest.mark.redis

COMMIT = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
THREAD = "T1:C1:1700000000.000100"


def turn(n: int) -> Turn:
    return Turn(question=f"question {n}", answer=f"answer {n}")


# --- memory -----------------------------------------------------------------------------


def test_empty_thread(redis_client):
    assert ThreadMemory(redis_client).load(THREAD) == Conversation(turns=[], summary="")


def test_turns_are_trimmed_and_ordered(redis_client):
    memory = ThreadMemory(redis_client, max_turns=3)
    for n in range(5):
        memory.append(THREAD, turn(n))
    assert memory.load(THREAD).turns == [turn(2), turn(3), turn(4)]
    assert redis_client.llen(memory.turns_key(THREAD)) == 3
    assert memory.turns_key(THREAD) == f"askbox:memory:{THREAD}:turns"
    assert ThreadMemory(redis_client).load("other thread").turns == []


def test_ttl_set_and_refreshed_on_load(redis_client):
    memory = ThreadMemory(redis_client, ttl=1000)
    memory.append(THREAD, turn(1))
    memory.set_summary(THREAD, "so far")
    turns_key, summary_key = memory.turns_key(THREAD), memory.summary_key(THREAD)
    assert 990 < redis_client.ttl(turns_key) <= 1000
    assert 990 < redis_client.ttl(summary_key) <= 1000

    # Age both keys instead of sleeping, then use the thread.
    redis_client.expire(turns_key, 10)
    redis_client.expire(summary_key, 10)
    assert redis_client.ttl(turns_key) <= 10
    memory.load(THREAD)
    assert 990 < redis_client.ttl(turns_key) <= 1000
    assert 990 < redis_client.ttl(summary_key) <= 1000

    # Appending is use too, and keeps the summary alive with the turns.
    redis_client.expire(summary_key, 10)
    memory.append(THREAD, turn(2))
    assert 990 < redis_client.ttl(summary_key) <= 1000


def test_default_ttl_is_seven_days(redis_client):
    memory = ThreadMemory(redis_client)
    memory.append(THREAD, turn(1))
    assert 7 * 24 * 3600 - 10 < redis_client.ttl(memory.turns_key(THREAD)) <= 7 * 24 * 3600


def test_shared_between_connections(redis_client):
    # Two clients, as the bot and a worker would have; one decodes responses, one does not.
    other = redis.Redis.from_url(REDIS_TEST_URL, decode_responses=True)
    try:
        assert other.client_id() != redis_client.client_id()
        ThreadMemory(redis_client).append(THREAD, turn(1))
        ThreadMemory(other).append(THREAD, turn(2))
        ThreadMemory(other).set_summary(THREAD, "résumé ✓")
        for client in (redis_client, other):
            assert ThreadMemory(client).load(THREAD) == Conversation(turns=[turn(1), turn(2)], summary="résumé ✓")
    finally:
        other.close()


def test_summary_slot_and_forget(redis_client):
    memory = ThreadMemory(redis_client)
    memory.set_summary(THREAD, "first summary")
    assert memory.load(THREAD) == Conversation(turns=[], summary="first summary")
    memory.append(THREAD, turn(1))
    memory.set_summary(THREAD, "second summary")
    assert memory.load(THREAD) == Conversation(turns=[turn(1)], summary="second summary")
    memory.forget(THREAD)
    assert memory.load(THREAD) == Conversation(turns=[])
    assert redis_client.exists(memory.turns_key(THREAD), memory.summary_key(THREAD)) == 0


def test_corrupt_entry_is_skipped(redis_client, caplog):
    memory = ThreadMemory(redis_client)
    memory.append(THREAD, turn(1))
    key = memory.turns_key(THREAD)
    redis_client.rpush(key, b"{not json", b'{"question": "no answer"}', b"\xff\xfe")
    memory.append(THREAD, turn(2))
    with caplog.at_level(logging.WARNING, logger="jobs.memory"):
        assert memory.load(THREAD).turns == [turn(1), turn(2)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all(key in r.getMessage() for r in warnings)


# --- cache ------------------------------------------------------------------------------


def test_normalize_question():
    assert normalize_question("  How does\n  AUTH   work?? ") == "how does auth work"
    assert normalize_question("Why...!") == "why"
    assert normalize_question("what is `fresh`? ") == "what is `fresh`"
    # Option words stay: parsing them is the caller's business.
    assert normalize_question("fresh: where is main") == "fresh: where is main"
    assert normalize_question("Straße") == normalize_question("STRASSE")


def test_cache_hit_and_misses(redis_client):
    cache = AnswerCache(redis_client, scope="terminal")
    stored = cache.put("web", COMMIT, "cursor", "gpt-5", "Where is the login handler?", "In `auth.py`.", 12.5)
    assert stored is not None and stored.text == "In `auth.py`." and stored.created_at.tzinfo == UTC

    hit = cache.get("web", COMMIT, "cursor", "gpt-5", "  where is the LOGIN handler ")
    assert hit == stored
    assert cache.get("web", "f" * 40, "cursor", "gpt-5", "Where is the login handler?") is None
    assert cache.get("web", COMMIT, "gemini", "gpt-5", "Where is the login handler?") is None
    assert cache.get("web", COMMIT, "cursor", None, "Where is the login handler?") is None
    assert cache.get("api", COMMIT, "cursor", "gpt-5", "Where is the login handler?") is None
    assert cache.get("web", COMMIT, "cursor", "gpt-5", "Where is the logout handler?") is None

    (key,) = redis_client.keys("askbox:cache:*")
    assert len(key) == len("askbox:cache:") + 64
    assert 30 * 24 * 3600 - 10 < redis_client.ttl(key) <= 30 * 24 * 3600


def test_fresh_run_overwrites(redis_client):
    cache = AnswerCache(redis_client, scope="terminal")
    cache.put("web", COMMIT, "cursor", None, "q", "old", 1.0)
    # A fresh run skips get() and stores its own answer over the old one.
    cache.put("web", COMMIT, "cursor", None, "q", "new", 2.0)
    assert cache.get("web", COMMIT, "cursor", None, "q").text == "new"


def test_no_caching_without_commit(redis_client):
    cache = AnswerCache(redis_client, scope="terminal")
    assert cache.put("web", None, "cursor", None, "q", "answer", 1.0) is None
    assert cache.get("web", None, "cursor", None, "q") is None
    assert redis_client.keys("askbox:cache:*") == []


def test_corrupt_cache_entry_is_a_miss(redis_client, caplog):
    cache = AnswerCache(redis_client, scope="terminal")
    cache.put("web", COMMIT, "cursor", None, "q", "answer", 1.0)
    (key,) = redis_client.keys("askbox:cache:*")
    redis_client.set(key, b"garbage")
    with caplog.at_level(logging.WARNING, logger="jobs.cache"):
        assert cache.get("web", COMMIT, "cursor", None, "q") is None
    assert "corrupt cache entry" in caplog.text


def test_notice():
    answer = CachedAnswer(
        text="x",
        repo="web",
        commit=COMMIT,
        agent="cursor",
        model=None,
        created_at=datetime(2026, 11, 27, 20, 14, 59, tzinfo=UTC),
        duration=None,
    )
    assert answer.notice() == "Cached answer from commit 1a2b3c4 (2026-11-27 20:14 UTC). Add `fresh` to ask again."
    # Stored JSON round-trips, and a naive time is read as UTC.
    assert CachedAnswer.model_validate_json(answer.model_dump_json()) == answer
    naive = CachedAnswer(**(answer.model_dump() | {"created_at": datetime(2026, 1, 2, 3, 4)}))
    assert naive.notice().endswith("(2026-01-02 03:04 UTC). Add `fresh` to ask again.")


def test_cache_hit_latency(redis_client):
    cache = AnswerCache(redis_client, scope="terminal")
    cache.put("web", COMMIT, "cursor", None, "how does it work", "It works. " * 2000, 30.0)
    cache.get("web", COMMIT, "cursor", None, "how does it work")  # warm the connection
    timings = []
    for _ in range(20):
        start = time.perf_counter()
        assert cache.get("web", COMMIT, "cursor", None, "How does it work?") is not None
        timings.append(time.perf_counter() - start)
    timings.sort()
    median, worst = timings[len(timings) // 2], timings[-1]
    print(f"\ncache hit latency (20 KB answer): median {median * 1000:.2f} ms, max {worst * 1000:.2f} ms")
    # The requirement is "under a second"; 50 ms is typical even on a busy machine.
    assert median < 0.05 and worst < 1.0


# --- durability -------------------------------------------------------------------------


class OwnRedis:
    """A redis-server of our own with AOF (fsync on every write), so it can be crashed."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> redis.Redis:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server", "binary not on PATH")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.data_dir),
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                # Wait until the AOF is loaded: until then the server answers LOADING.
                if client.info("persistence")["loading"] == 0:
                    return client
            except redis.BusyLoadingError:
                pass
            except redis.ConnectionError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    unavailable("own redis-server", exc)
            time.sleep(0.05)

    def crash(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis-data")
    server.data_dir.mkdir()
    try:
        yield server
    finally:
        server.stop()


def test_survives_a_crash_with_aof(own_redis):
    client = own_redis.start()
    memory = ThreadMemory(client, max_turns=2, ttl=3600)
    for n in range(3):
        memory.append(THREAD, turn(n))
    memory.set_summary(THREAD, "the story so far")
    stored = AnswerCache(client, scope="terminal").put("web", COMMIT, "cursor", "m", "q?", "cached answer", 3.0)
    client.close()

    own_redis.crash()  # SIGKILL: no shutdown hook, no final save
    client = own_redis.start()
    try:
        memory = ThreadMemory(client, max_turns=2, ttl=3600)
        assert memory.load(THREAD) == Conversation(turns=[turn(1), turn(2)], summary="the story so far")
        assert 0 < client.ttl(memory.turns_key(THREAD)) <= 3600
        assert AnswerCache(client, scope="terminal").get("web", COMMIT, "cursor", "m", "Q") == stored
        assert list(own_redis.data_dir.rglob("*.aof")), "expected AOF files in the data dir"
    finally:
        client.close()
