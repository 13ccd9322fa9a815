"""Redis through Sentinel, across a failover: a primary, a replica and three Sentinels of
the test's own; the bot (HTTP mode), real `askbox worker` processes, the gateway and the
dashboard all connect through the Sentinels (ASKBOX_REDIS_SENTINELS; the URL's host is
never used), and the primary is SIGKILLed while questions are being answered.

Replication is asynchronous: a write acknowledged by the primary and not yet copied to
the replica is gone after the promotion. So for the questions in flight at the kill the
test measures and prints what was lost or doubled; every question asked after the
promotion must be answered exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from redis import Redis
from rq import Worker

from gateway.client import session_state
from jobs.queue import fetch
from jobs.settings import RedisSettings
from jobs.slack.thread_final import REACTIONS
from tests.fakes.gemini_api import FakeGeminiAPI, Text
from tests.integration.conftest import ASKER, CHANNEL, bot_env
from tests.integration.gateway_helpers import GatewayProcess, call, gateway_env
from tests.integration.pipeline_helpers import ASKBOX, RedisServer, Sentinels, Workers, free_port, wait_for
from tests.integration.test_bot import http_bot

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.redis, pytest.mark.usefixtures("no_leftovers")]

OUTCOMES = set(REACTIONS.values())
# With Sentinels the URL gives only the credentials and the db: this host is never looked up.
SENTINEL_URL = "redis://host-unused-with-sentinels/0"


class Cluster:
    """A primary, one replica, three Sentinels; ``failover()`` SIGKILLs the primary."""

    def __init__(self, root: Path) -> None:
        for name in ("primary", "replica", "sentinels"):
            (root / name).mkdir(parents=True)
        self.primary = RedisServer(root / "primary")
        self.replica = RedisServer(root / "replica", extra=("--replicaof", "127.0.0.1", str(self.primary.port)))
        self.sentinels = Sentinels(root / "sentinels", self.primary)

    def start(self) -> Cluster:
        self.primary.start()
        self.replica.start()
        self.sentinels.start(replicas=1)
        return self

    @property
    def env(self) -> dict[str, str]:
        return {
            "ASKBOX_REDIS_URL": SENTINEL_URL,
            "ASKBOX_REDIS_SENTINELS": self.sentinels.addresses,
            "ASKBOX_REDIS_MASTER": self.sentinels.name,
        }

    def client(self) -> Redis:
        """The test's own view, through the same code as every askbox process."""
        return RedisSettings(
            ASKBOX_REDIS_URL=SENTINEL_URL, redis_sentinels=self.sentinels.addresses, redis_master=self.sentinels.name
        ).client()

    def async_client(self):  # type: ignore[no-untyped-def]
        return RedisSettings(
            ASKBOX_REDIS_URL=SENTINEL_URL, redis_sentinels=self.sentinels.addresses, redis_master=self.sentinels.name
        ).async_client()

    def failover(self, meanwhile: Callable[[], object] = lambda: None) -> float:
        """SIGKILL the primary, run ``meanwhile``; seconds until a majority of Sentinels
        name the replica."""
        killed = time.monotonic()
        self.primary.crash()
        meanwhile()
        wait_for(lambda: self.sentinels.master_port() == self.replica.port, 60, "the replica's promotion", every=0.1)
        return time.monotonic() - killed

    def stop(self) -> None:
        self.sentinels.stop()
        self.replica.stop()
        self.primary.stop()


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path / "redis")
    try:
        yield made.start()
    finally:
        made.stop()


def job_id(fake, ts: str) -> str:
    return f"slack-{fake.team_id}-{CHANNEL}-{ts.replace('.', '_')}"


def finals(fake, ts: str) -> list[str]:
    """Outcome reactions put on the question: one per final message posted."""
    return [
        c.args.get("name")
        for c in fake.calls("reactions.add")
        if c.args.get("timestamp") == ts and c.args.get("name") in OUTCOMES
    ]


def ask(fake, deliver, text: str) -> tuple[str, bool]:
    """A mention delivered as Slack does: retried (X-Slack-Retry-Num) while not acked with 200.
    Returns its ts and whether it was accepted."""
    mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> {text}")
    for attempt in range(4):  # the first delivery and Slack's three retries
        try:
            status, _ = deliver(mention, **({"retry_num": attempt, "retry_reason": "http_timeout"} if attempt else {}))
        except OSError:
            status = 0
        if status == 200:
            return mention["ts"], True
        time.sleep(1.0)
    return mention["ts"], False


def test_questions_survive_a_sentinel_failover(fake, cluster, repo, cursor_standin_image, egress_root, tmp_path):
    env = {
        **bot_env(fake, SENTINEL_URL, repo),
        **cluster.env,
        "ASKBOX_AGENT": "cursor",
        "ASKBOX_CURSOR_IMAGE": cursor_standin_image,
        "CURSOR_API_KEY": "key-for-the-standin",
        "ASKBOX_EGRESS_SOCKET_DIR": str(egress_root),
    }
    workers = Workers(env)
    workers.start(2, log_dir=tmp_path)
    redis = cluster.client()
    try:
        wait_for(lambda: len(Worker.all(connection=redis)) >= 2, 90, "both workers to register")
        with http_bot(
            fake, SimpleNamespace(url=SENTINEL_URL), repo, tmp_path, **{**env, "SLACK_SIGNING_SECRET": "s3cret"}
        ) as (_port, deliver):
            # In flight at the kill: the recorded full session streams for several seconds.
            before = [ask(fake, deliver, f"before the failover {i}: how does retry work?") for i in range(4)]
            accepted_before = [ts for ts, ok in before if ok]
            wait_for(
                lambda: any(
                    fetch(redis, job_id(fake, ts)).get_status(refresh=True) == "started" for ts in accepted_before
                ),
                90,
                "a question to be running",
            )
            # Asked while the primary is dead and not yet replaced: the bot's writes wait
            # (client() retries) and land on the promoted replica.
            with ThreadPoolExecutor(2) as pool:
                asking = []
                took = cluster.failover(
                    meanwhile=lambda: asking.extend(
                        pool.submit(ask, fake, deliver, f"during the failover {i} [read:README.md] what?")
                        for i in range(2)
                    )
                )
                during = [future.result() for future in asking]
            after = [ask(fake, deliver, f"after the failover {i} [read:README.md] what is this?") for i in range(4)]
            after += during
            accepted_after = [ts for ts, ok in after if ok]
            assert len(accepted_after) == len(after), "a question asked during or after the failover was not acked"
            try:
                fake.wait_until(lambda: all(finals(fake, ts) for ts in accepted_after), timeout=240)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{workers.tail(40)}") from None
            # The in-flight ones get the same time again to end (retries, the abandoned-job sweep).
            deadline = time.monotonic() + 90
            fake.wait_until(
                lambda: all(finals(fake, ts) for ts in accepted_before) or time.monotonic() > deadline, timeout=100
            )
            time.sleep(2)  # anything doubled would be posting now
    finally:
        workers.stop()
    lost = [ts for ts in accepted_before if not finals(fake, ts)]
    doubled = [ts for ts in accepted_before if len(finals(fake, ts)) > 1]
    answered = [ts for ts in accepted_before if finals(fake, ts) == ["white_check_mark"]]
    print(
        f"\nsentinel failover: promoted {took:.1f} s after SIGKILL; in flight: {len(before)} asked, "
        f"{len(accepted_before)} accepted, {len(answered)} answered once, {len(lost)} lost, {len(doubled)} doubled; "
        f"during and after: {len(after)} asked, "
        f"{sum(finals(fake, ts) == ['white_check_mark'] for ts in accepted_after)} answered once"
    )
    for ts in accepted_after:
        assert finals(fake, ts) == ["white_check_mark"], (ts, finals(fake, ts), workers.tail(40))
        answers = [m for m in fake.thread(CHANNEL, ts) if m.is_bot and "demo repo" in (m.text or "") + str(m.blocks)]
        assert len(answers) == 1, [m.text for m in fake.thread(CHANNEL, ts)]
    assert len(accepted_before) == len(before)  # the primary was up: every one was acked
    # Nothing crashed on the way, the warm shutdown after the failover included.
    logs = {log.name: log.read_text() for log in workers.logs}
    assert not [name for name, text in logs.items() if "Traceback" in text], workers.tail(60)


def _dashboard_page(port: int) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/0/data/queues.json",
        headers={"Authorization": "Basic " + base64.b64encode(b"ops:pw").decode()},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_gateway_and_dashboard_ride_out_a_failover(cluster):
    redis = cluster.client()
    settings = {k.removeprefix("ASKBOX_").lower(): v for k, v in cluster.env.items() if k != "ASKBOX_REDIS_URL"}
    port = free_port()
    with (
        FakeGeminiAPI() as api,
        GatewayProcess(gateway_env(api.base_url, ["AIzaSy-sentinel-key"], SENTINEL_URL, **settings)) as gateway,
    ):
        dashboard = subprocess.Popen(
            [ASKBOX, "dashboard", "--port", str(port)],
            env={**gateway.env, "ASKBOX_DASHBOARD_USER": "ops", "ASKBOX_DASHBOARD_PASSWORD": "pw"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            api.script(Text("before"), Text("after"))
            session = gateway.open(user="USENT")
            token = session.token.get_secret_value()
            assert asyncio.run(call(session.socket, token)).status == 200
            wait_for(lambda: _dashboard_page(port) == 200, 30, "the dashboard")
            assert redis.wait(1, 5000) == 1  # what was written is on the replica before the kill
            # Commands in flight at the kill (blocked, as a worker waiting for a job is): each
            # must find the promoted replica through the Sentinels and complete there.
            waiting = threading.Barrier(3)

            async def async_side() -> object:
                client = cluster.async_client()
                await client.ping()
                waiting.wait()
                return await client.blpop(["askbox:test:async"], timeout=15)

            def sync_side() -> object:
                redis.ping()
                waiting.wait()
                return redis.blpop(["askbox:test:sync"], timeout=15)

            with ThreadPoolExecutor(2) as pool:
                blocked = [pool.submit(asyncio.run, async_side()), pool.submit(sync_side)]
                waiting.wait()
                time.sleep(0.5)  # both BLPOPs sent
                cluster.failover()
                pusher = cluster.client()
                pusher.rpush("askbox:test:async", "a")
                pusher.rpush("askbox:test:sync", "s")
                assert [future.result(timeout=60) for future in blocked] == [
                    (b"askbox:test:async", b"a"),
                    (b"askbox:test:sync", b"s"),
                ]
            assert asyncio.run(call(session.socket, token)).status == 200, gateway.output()
            assert _dashboard_page(port) == 200
            state = session_state(redis, session.id)
        finally:
            dashboard.terminate()
            dashboard.wait(timeout=10)
    assert state.requests == 2  # both metered, the second on the promoted replica
    assert redis.connection_pool.get_master_address()[1] == cluster.replica.port


def test_an_outbox_write_waits_for_the_replica_and_survives_a_failover(cluster, caplog):
    """The outbox write WAITs until the replica holds it (jobs/replicas.py): with the
    replica stalled (SIGSTOP) it returns only once the replica is back and has it, so
    the primary SIGKILLed right after loses nothing; a replica that does not answer
    within REPLICA_WAIT_MS is logged, and the write still counts."""
    import logging
    import os
    import signal

    from jobs import keys, outbox
    from jobs.final import Final
    from jobs.replicas import REPLICA_WAIT_MS

    redis = cluster.client()
    replica = cluster.replica.proc
    assert replica is not None
    final = Final(kind="answer", text="kept through the failover")

    # 1. A replica that does not answer: the write waits REPLICA_WAIT_MS, says so, counts.
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="jobs.replicas"):
            assert outbox.write(redis, "job-unreplicated", final)
        waited = time.monotonic() - started
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    assert waited >= REPLICA_WAIT_MS / 1000 * 0.9, waited
    assert "the final of job-unreplicated is on no replica" in caplog.text

    # 2. A replica stalled for a moment: the write returns once it holds the final.
    wait_for(
        lambda: Redis(port=cluster.replica.port).hget(keys.final_outbox("job-unreplicated"), "final"),
        10,
        "the replica to catch up",
    )
    caplog.clear()
    os.kill(replica.pid, signal.SIGSTOP)
    # Resumed early in the wait's second: a loaded machine (a CI run with four test
    # processes) took over 0.8 s to have a resumed replica answer.
    threading.Timer(0.05, os.kill, (replica.pid, signal.SIGCONT)).start()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="jobs.replicas"):
        assert outbox.write(redis, "job-kept", final)
    waited = time.monotonic() - started
    # It waited for the stalled replica, and returned because the replica acknowledged the
    # write (no "on no replica" warning), not because the wait ran out: the reply, not a
    # clock, says so (on a busy machine a resumed replica may answer late).
    assert waited >= 0.04, waited
    assert "job-kept is on no replica" not in caplog.text, caplog.text
    took = cluster.failover()  # SIGKILL the primary the moment the write returned
    promoted = cluster.client()
    assert outbox.read(promoted, "job-kept") == final
    assert promoted.zscore(keys.FINAL_OUTBOX_PENDING, "job-kept") is not None  # the sweep still finds it
    print(
        f"\noutbox write: waited {waited:.2f} s for the stalled replica; after the failover "
        f"({took:.1f} s) the final and its pending entry are there"
    )
