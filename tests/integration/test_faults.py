"""Exactly once under faults: real `askbox bot --http`, real `askbox worker` processes,
a Redis of the test's own (AOF, fsync always), real sandboxes running the cursor
stand-in, and the fake Slack. Each scenario asserts at the fake Slack exactly one final
message per accepted question (its messages carry ``askbox_final`` metadata, jobs/outbox.py)
and none lost, and prints one line of figures.

Crashes at an exact point use the test-only ``ASKBOX_TEST_CRASH_AT`` (jobs/crash_points.py):
the process ``os._exit``s there, as a SIGKILL would leave it.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from rq import Worker

from jobs import outbox
from jobs.question import Origin, sanitize_id
from tests.conftest import sandbox_containers
from tests.fakes.slack import RESET, FakeSlack, Message
from tests.integration.conftest import ASKER, CHANNEL, OTHER, bot_env
from tests.integration.pipeline_helpers import ASKBOX, Workers, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.redis, pytest.mark.usefixtures("no_leftovers")]
QUICK = "[transcript:subagent-sleep-v2]"  # about 1.6 s of recorded cursor-agent output
SLOW = "[transcript:direct-sleep]"  # about 4.7 s
SECRET = "s3cret"
BRIDGE = "askbox-fd0"  # the suite's dockerd's own bridge (see OwnDockerd)


@dataclass
class HttpBot:
    proc: subprocess.Popen
    url: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


@pytest.fixture()
def env(fake, redis_server, repo, cursor_standin_image, egress_root) -> dict[str, str]:
    """What bot and workers share: the fake Slack, the Redis, the cursor stand-in."""
    return {
        **bot_env(fake, redis_server.url, repo),
        "SLACK_SIGNING_SECRET": SECRET,
        "ASKBOX_AGENT": "cursor",
        "ASKBOX_CURSOR_IMAGE": cursor_standin_image,
        "CURSOR_API_KEY": "key-for-the-standin",
        "ASKBOX_EGRESS_SOCKET_DIR": str(egress_root),
        "ASKBOX_MAINTENANCE_INTERVAL": "5",
        "ASKBOX_JOB_MONITORING_INTERVAL": "1",
        "ASKBOX_REAPER_INTERVAL": "2",
        "ASKBOX_WORKER_TTL": "20",
        "ASKBOX_OUTBOX_SWEEP_INTERVAL": "2",
        "ASKBOX_PENDING_CLAIM_TTL": "2",
    }


@pytest.fixture()
def http_bots(env, tmp_path) -> Iterator:
    started: list[HttpBot] = []

    def start(**extra: str) -> HttpBot:
        port = free_port()
        bot_environment = {k: v for k, v in {**env, **extra}.items() if k != "SLACK_APP_TOKEN"}
        log = (tmp_path / f"http-bot-{len(started)}.log").open("w")
        proc = subprocess.Popen(
            [ASKBOX, "bot", "--http", "--port", str(port)], env=bot_environment, stdout=log, stderr=subprocess.STDOUT
        )
        bot = HttpBot(proc, f"http://127.0.0.1:{port}/slack/events")
        started.append(bot)
        wait_for(lambda: proc.poll() is not None or _listening(port), 30, "the HTTP bot to listen")
        if proc.poll() is not None:  # it died: say why, not "timed out"
            raise AssertionError(
                f"askbox bot --http exited {proc.returncode}: "
                f"{(tmp_path / f'http-bot-{len(started) - 1}.log').read_text()[-2000:]}"
            )
        return bot

    yield start
    for bot in started:
        bot.stop()


@pytest.fixture()
def pool(env, tmp_path) -> Iterator[Workers]:
    workers = Workers(env)
    workers.log_dir = tmp_path  # type: ignore[attr-defined]
    yield workers
    workers.stop()


@dataclass
class OwnDockerd:
    """A dockerd of the suite's own (its own data-root, exec-root, socket, pidfile and
    bridge; no iptables), so it can be restarted without touching the machine's daemon.
    Its data-root is kept between sessions: the images are loaded into it once.

    Not ``--bridge=none``: a dockerd started so deletes the host's ``docker0`` link (the
    machine daemon's default bridge). It gets a bridge of its own, with a TEST-NET
    address that nothing routes (its sandboxes run without a network anyway)."""

    root: Path
    proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host)

    def start(self) -> OwnDockerd:
        if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0:
            for command in (
                ["ip", "link", "add", BRIDGE, "type", "bridge"],
                ["ip", "addr", "add", "192.0.2.1/24", "dev", BRIDGE],
                ["ip", "link", "set", BRIDGE, "up"],
            ):
                subprocess.run(command, check=True, capture_output=True)
        log = (self.root / "dockerd.log").open("a")
        self.proc = subprocess.Popen(
            [
                "dockerd",
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "-H",
                self.host,
                "--pidfile",
                str(self.root / "docker.pid"),
                f"--bridge={BRIDGE}",
                "--iptables=false",
                "--ip-masq=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self._answers(), 60, "the suite's own dockerd")
        return self

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except docker.errors.DockerException:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # dockerd stops its containers and containerd on SIGTERM
            self.proc.wait(timeout=60)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture()
def own_dockerd(built_images, cursor_standin_image) -> Iterator[OwnDockerd]:
    root = Path("/tmp/askbox-faults-dockerd")
    root.mkdir(exist_ok=True)
    with (root / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one session at a time uses this data-root
        daemon = OwnDockerd(root).start()
        try:
            needed = [built_images["sandbox"], built_images["egress-proxy"], cursor_standin_image]
            own = daemon.client()
            missing = [tag for tag in needed if not _has_image(own, tag)]
            if missing:  # the first session only: `docker save | docker -H ... load`
                subprocess.run(
                    f"docker save {' '.join(missing)} | docker -H {daemon.host} load",
                    shell=True,
                    check=True,
                    capture_output=True,
                    timeout=600,
                )
            yield daemon
        finally:
            daemon.stop()


def _has_image(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def deliver(fake: FakeSlack, bot: HttpBot, event: dict, retry: int | None = None) -> int:
    """One delivery, as Slack makes it; the HTTP status (0: the bot died on it)."""
    try:
        return fake.deliver_http(
            bot.url,
            fake.event_callback(event),
            SECRET,
            retry_num=retry,
            retry_reason="http_timeout" if retry else None,
            record=retry is None,
        )[0]
    except OSError:
        return 0


def deliver_until_acked(fake: FakeSlack, bot: HttpBot, event: dict, tries: int = 20, first: int = 0) -> int:
    """Slack's redelivery, compressed: again (with X-Slack-Retry-Num) until a 200; the
    number of the delivery that was acknowledged."""
    for attempt in range(first, first + tries):
        status = deliver(fake, bot, event, retry=attempt or None)
        if status == 200:
            return attempt
        time.sleep(1)
    raise AssertionError(f"never acknowledged after {tries} deliveries")


def job_id_of(fake: FakeSlack, event: dict) -> str:
    origin = Origin(
        kind="slack",
        user=event["user"],
        team=fake.team_id,
        channel=CHANNEL,
        thread_ts=event["ts"],
        message_ts=event["ts"],
    )
    return sanitize_id(origin.event_key() or "")


def final_parts(fake: FakeSlack, event: dict) -> Counter:
    """How often each part of the question's final is in its thread."""
    job_id = job_id_of(fake, event)
    found: Counter = Counter()
    for message in _bot_messages(fake, event):
        metadata = message.metadata or {}
        payload = metadata.get("event_payload") or {}
        if metadata.get("event_type") == outbox.EVENT_TYPE and payload.get("job") == job_id:
            found[payload.get("part")] += 1
    return found


def _bot_messages(fake: FakeSlack, event: dict) -> list[Message]:
    return [m for m in fake.thread(CHANNEL, event["ts"]) if m.is_bot and not m.deleted]


def finals(fake: FakeSlack, event: dict) -> int:
    """Final messages of the question in its thread ("last" or "outcome": one per final)."""
    parts = final_parts(fake, event)
    return parts["last"] + parts["outcome"]


def answered(fake: FakeSlack, events: list[dict]) -> bool:
    return all(finals(fake, e) >= 1 for e in events)


def assert_exactly_once(fake: FakeSlack, events: list[dict]) -> None:
    for event in events:
        parts = final_parts(fake, event)
        assert finals(fake, event) == 1 and all(n == 1 for n in parts.values()), (event["text"], parts)
        others = [m.text for m in _bot_messages(fake, event) if not (m.metadata or {}).get("event_type")]
        assert len(others) <= 1, others  # the status message only: never a stale second one


def mention(fake: FakeSlack, text: str, user: str = ASKER) -> dict:
    return fake.app_mention(user, CHANNEL, f"<@{fake.bot_user_id}> {text}")


# ---------------------------------------------------------------------------------------- 1


def test_bot_killed_after_the_claim_then_redelivered_is_answered_once(fake, http_bots, pool, tmp_path):
    pool.start(1, log_dir=tmp_path)
    crashing = http_bots(ASKBOX_TEST_CRASH_AT="after-claim")
    question = mention(fake, f"{QUICK} what is this?")
    assert deliver(fake, crashing, question) == 0  # died mid-way: Slack got no answer
    crashing.proc.wait(timeout=10)
    # Nothing reached the thread: the bot posts only after its acknowledgement (issue 19).
    assert _bot_messages(fake, question) == []

    fresh = http_bots()
    started = time.monotonic()
    retries = deliver_until_acked(fake, fresh, question, first=1)  # while the pending claim lives: not acked
    wait_for(lambda: answered(fake, [question]), 90, lambda: f"the answer\n{pool.tail()}")
    assert_exactly_once(fake, [question])
    print(
        f"bot killed after the claim: acked on redelivery {retries}, answered once after "
        f"{time.monotonic() - started:.1f} s"
    )


# ---------------------------------------------------------------------------------------- 2


def test_worker_killed_after_the_outbox_write_is_delivered_once(fake, http_bots, pool, env, redis, tmp_path):
    bot = http_bots()
    questions = [mention(fake, f"{QUICK} question {i}", user=(ASKER, OTHER)[i % 2]) for i in range(2)]
    for q in questions:
        assert deliver(fake, bot, q) == 200
    crashing = Workers({**env, "ASKBOX_TEST_CRASH_AT": "after-outbox"})
    [dies] = crashing.start(1, log_dir=tmp_path)  # its work-horse kills it, and itself, after the write
    assert dies.wait(timeout=120) != 0, crashing.tail()
    written = [outbox.read(redis, job_id_of(fake, q)) for q in questions]
    assert sum(map(bool, written)) == 1, "the crashing worker did not die after writing one final"
    assert finals(fake, questions[written.index(next(w for w in written if w))]) == 0  # not delivered
    killed_at = time.monotonic()
    pool.start(1, log_dir=tmp_path)  # the survivor: its sweep (or RQ's retry) delivers
    wait_for(lambda: answered(fake, questions), 120, lambda: f"both answers\n{pool.tail()}")
    assert_exactly_once(fake, questions)
    print(
        f"worker killed after the outbox write: {sum(map(bool, written))} final(s) outboxed undelivered, "
        f"all delivered once {time.monotonic() - killed_at:.1f} s after"
    )


# ---------------------------------------------------------------------------------------- 3


def test_worker_killed_mid_stream_ends_in_one_final(fake, http_bots, pool, redis, tmp_path):
    from rq import Worker

    from jobs.queue import fetch

    workers = pool.start(2, log_dir=tmp_path)
    bot = http_bots()
    question = mention(fake, f"{SLOW} explain")
    assert deliver(fake, bot, question) == 200
    job_id = job_id_of(fake, question)
    wait_for(lambda: fetch(redis, job_id).get_meta(refresh=True).get("state") == "running", 60, "the agent to run")
    time.sleep(1)
    name = fetch(redis, job_id).worker_name
    pid = {w.name: w.pid for w in Worker.all(connection=redis)}[name]
    pool.kill(next(p for p in workers if p.pid == pid))
    killed_at = time.monotonic()
    assert not outbox.written(redis, job_id), "killed too late: the run had ended"
    wait_for(lambda: answered(fake, [question]), 150, lambda: f"the final\n{pool.tail()}")
    time.sleep(2)  # a second final would come from the retry's own end: give it the time
    assert_exactly_once(fake, [question])
    kind = outbox.read(redis, job_id)
    print(f"worker killed mid-stream: one final ({kind and kind.kind}) {time.monotonic() - killed_at:.1f} s after")


# ---------------------------------------------------------------------------------------- 4


def test_redis_restarted_under_load_loses_and_doubles_nothing(fake, http_bots, pool, redis_server, redis, tmp_path):
    pool.start(2, log_dir=tmp_path)
    # Both serving (past their start checks, which end a worker that finds no Redis)
    # before the crash: this is a restart under load, not a worker started into an outage.
    wait_for(lambda: len(Worker.all(connection=redis)) >= 2, 180, lambda: f"two workers registered\n{pool.tail()}")
    bot = http_bots()
    questions = [mention(fake, f"{QUICK} load {i}", user=(ASKER, OTHER)[i % 2]) for i in range(6)]
    for q in questions[:3]:
        deliver_until_acked(fake, bot, q)
    redis_server.crash()  # SIGKILL: what was acknowledged is in the append-only file (fsync always)
    refused = sum(deliver(fake, bot, q) != 200 for q in questions[3:])  # Redis down: not acked
    redis_server.start()
    restarted_at = time.monotonic()
    for q in questions[3:]:
        deliver_until_acked(fake, bot, q)  # Slack's redelivery
    wait_for(lambda: answered(fake, questions), 150, lambda: f"every answer\n{pool.tail()}")
    assert_exactly_once(fake, questions)
    print(
        f"Redis restarted under load: {len(questions)} asked, {refused} refused while it was down and "
        f"redelivered, all answered once {time.monotonic() - restarted_at:.1f} s after the restart"
    )


# ---------------------------------------------------------------------------------------- 6


def test_slack_5xx_and_429_storm_during_finals(fake, http_bots, pool, tmp_path):
    pool.start(2, log_dir=tmp_path)
    bot = http_bots()
    questions = [mention(fake, f"{QUICK} storm {i}", user=(ASKER, OTHER)[i % 2]) for i in range(4)]
    started = time.monotonic()
    for q in questions:
        deliver_until_acked(fake, bot, q)
    # The finals (the next posts: the status messages are out) meet a storm: 5xx, some
    # after Slack did post (the caller cannot tell), and 429s.
    fake.server_error("chat.postMessage", times=3, after_effect=True)
    fake.server_error("chat.postMessage", times=3)
    fake.rate_limit("chat.postMessage", times=4, retry_after=1)
    wait_for(lambda: answered(fake, questions), 150, lambda: f"every answer\n{pool.tail()}")
    time.sleep(5)  # a sweep round more: nothing further may arrive
    assert_exactly_once(fake, questions)
    errors = Counter(c.status for c in fake.calls("chat.postMessage") if c.status != 200)
    print(
        f"Slack storm: {dict(errors)} answered to chat.postMessage, {len(questions)} finals posted once each "
        f"within {time.monotonic() - started:.1f} s"
    )


def test_connection_resets_after_slack_posted_the_finals(fake, http_bots, pool, tmp_path):
    """Slack posts a final and the connection is reset before its answer: the worker does
    not post it again blind (slack_sdk's connection-error retry would); the next attempt
    reads the thread, finds the part by its metadata and posts nothing twice."""
    pool.start(2, log_dir=tmp_path)
    bot = http_bots()
    questions = [mention(fake, f"{QUICK} reset {i}", user=(ASKER, OTHER)[i % 2]) for i in range(4)]
    started = time.monotonic()
    for q in questions:
        deliver_until_acked(fake, bot, q)
    fake.wait_until(lambda: all(_bot_messages(fake, q) for q in questions), timeout=30)  # the status messages
    fake.connection_reset("chat.postMessage", times=3)  # the next three posts: the finals
    wait_for(lambda: answered(fake, questions), 150, lambda: f"every answer\n{pool.tail()}")
    time.sleep(5)  # a sweep round more: nothing further may arrive
    assert_exactly_once(fake, questions)
    resets = sum(c.status == RESET for c in fake.calls("chat.postMessage"))
    assert resets == 3, resets
    print(
        f"connection resets after Slack posted: {resets} finals' answers lost, {len(questions)} finals "
        f"in the threads once each within {time.monotonic() - started:.1f} s"
    )


# ---------------------------------------------------------------------------------------- 7


def test_a_question_whose_fetch_is_slow_ends_once_not_killed_and_retried(fake, http_bots, env, redis, tmp_path):
    """The repository's remote answers each fetch after 30 s. RQ's timeout used to be the
    sandbox deadline plus a margin (here 20 + 10 s): shorter than the fetch alone, so RQ
    killed the work-horse mid-fetch and retried, fetch after fetch. The job timeout now
    sums every phase's bound (two fetches of up to 45 s, the snapshot, the deadline, the
    delivery, the margin): answered once, never killed, never retried."""
    from jobs.queue import fetch
    from tests.integration.git_helpers import GitHTTPServer, Upstream

    served = tmp_path / "served"
    Upstream(served, "demo").commit({"README.md": "# demo, from a slow remote\n"})
    stall = 30.0
    with GitHTTPServer(served, "git-token", stall=stall) as server:
        settings = {
            "ASKBOX_REPOS": json.dumps({"demo": {"url": server.url("demo"), "token_env": "DEMO_TOKEN"}}),
            "ASKBOX_REPO_ACCESS": "{}",
            "DEMO_TOKEN": "git-token",
            "ASKBOX_REPO_MIRRORS": str(tmp_path / "mirrors"),
            "ASKBOX_REPO_SNAPSHOTS": str(tmp_path / "snapshots"),
            "ASKBOX_REPO_REFRESH": "1",  # every question fetches (and waits for a fetch under way)
            "ASKBOX_REPO_FETCH_TIMEOUT": "45",
            "ASKBOX_SANDBOX_TIMEOUT": "20",
            "ASKBOX_JOB_TIMEOUT_MARGIN": "10",
        }
        workers = Workers({**env, **settings})
        workers.start(1, log_dir=tmp_path)
        try:
            wait_for(lambda: len(Worker.all(connection=redis)) == 1, 180, lambda: f"the worker\n{workers.tail()}")
            bot = http_bots(**settings)
            question = mention(fake, f"{QUICK} what is in the readme?")
            fetches = len(server.requests)
            started = time.monotonic()
            assert deliver(fake, bot, question) == 200
            bot_log = "\n".join(p.read_text(errors="replace")[-3000:] for p in tmp_path.glob("http-bot-*.log"))
            wait_for(
                lambda: answered(fake, [question]),
                240,
                lambda: (
                    f"the answer\n{workers.tail()}\n--- bot\n{bot_log}\n--- thread\n{_bot_messages(fake, question)}"
                ),
            )
            took = time.monotonic() - started
        finally:
            workers.stop()
    job_id = job_id_of(fake, question)
    logs = "".join(log.read_text(errors="replace") for log in workers.logs)
    assert_exactly_once(fake, [question])
    ended = outbox.read(redis, job_id)
    assert ended is not None and ended.kind == "answer", ended
    assert took >= stall and len(server.requests) > fetches, "the question did not wait for a fetch"
    job = fetch(redis, job_id)
    assert job.timeout >= 2 * 45 + 20 + 10 and job.retries_left == 2, (job.timeout, job.retries_left)
    for sign in ("JobTimeoutException", "maximum timeout", "for retry"):
        assert sign not in logs, sign
    print(
        f"a fetch of {stall:.0f} s (RQ timeout {job.timeout} s, was 30 s): answered once in {took:.1f} s, "
        f"no kill, no retry"
    )


# ---------------------------------------------------------------------------------------- 8


def test_a_work_horse_killed_after_progress_was_shown_ends_once_not_retried(fake, http_bots, pool, redis, tmp_path):
    """The work-horse dies (SIGKILL) once the thread shows the agent's steps; its worker
    lives on. Retrying would show a second run's steps under the first's: the question
    ends with one message saying the worker stopped, and RQ does not retry it."""
    from jobs import keys
    from jobs.queue import fetch
    from tests.integration.pipeline_helpers import descendants

    [worker] = pool.start(1, log_dir=tmp_path)
    bot = http_bots()
    question = mention(fake, f"{SLOW} explain")
    assert deliver(fake, bot, question) == 200
    job_id = job_id_of(fake, question)
    # The job marks it before any publisher shows it; the transcript ends about a second
    # after its first step, so the kill follows at once.
    wait_for(
        lambda: redis.exists(keys.progress_shown(job_id)),
        90,
        lambda: f"the agent's first step\n{pool.tail()}",
        every=0.02,
    )
    horses = [pid for pid in descendants(worker.pid) if _is_work_horse(pid)]
    assert horses, "the work-horse was not found"
    for pid in horses:
        os.kill(pid, 9)
    killed_at = time.monotonic()
    wait_for(lambda: answered(fake, [question]), 60, lambda: f"the final\n{pool.tail()}")
    ended_after = time.monotonic() - killed_at
    time.sleep(5)  # a retry would start a second run now: give it the time
    assert_exactly_once(fake, [question])
    ended = outbox.read(redis, job_id)
    assert ended is not None and ended.kind == "infra" and "stopped before it finished" in ended.text, ended
    job = fetch(redis, job_id)
    assert job.get_status() == "failed" and job.retries_left == 0, (job.get_status(), job.retries_left)
    assert worker.poll() is None, "the worker itself must live on"
    print(f"work-horse killed after progress was shown: one message {ended_after:.1f} s after, not retried")


def _is_work_horse(pid: int) -> bool:
    """RQ's work-horse: a fork of the askbox worker that leads its own process group
    (RQ's ``os.setpgrp()``), unlike the worker's scheduler process."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        leads = os.getpgid(pid) == pid
    except OSError:
        return False
    return leads and any(part.endswith(b"askbox") for part in command) and b"worker" in command


# ---------------------------------------------------------------------------------------- 5


def test_docker_daemon_restarted_mid_question(fake, http_bots, env, own_dockerd, redis, tmp_path):
    workers = Workers({**env, "DOCKER_HOST": own_dockerd.host})
    workers.start(1, log_dir=tmp_path)
    own = own_dockerd.client()
    try:
        bot = http_bots()
        first = mention(fake, f"{SLOW} explain")
        assert deliver(fake, bot, first) == 200
        wait_for(
            lambda: [c for c in sandbox_containers(own) if c.attrs.get("State") == "running"],
            120,
            lambda: f"the sandbox to run in the suite's dockerd\n{workers.tail()}",
        )
        own_dockerd.restart()  # its containers die with it (no live-restore)
        restarted_at = time.monotonic()
        wait_for(lambda: answered(fake, [first]), 150, lambda: f"the first question's final\n{workers.tail()}")
        ended = outbox.read(redis, job_id_of(fake, first))
        assert ended is not None and (ended.kind == "answer" or ended.reference), ended  # retried, or one clear message
        from jobs.queue import fetch

        retries_left = fetch(redis, job_id_of(fake, first)).retries_left
        assert ended.kind != "answer" or (retries_left or 0) < 2, "the restart did not cut the first run off"
        second = mention(fake, f"{QUICK} and now?", user=OTHER)
        assert deliver(fake, bot, second) == 200
        wait_for(lambda: answered(fake, [second]), 120, lambda: f"the answer after the restart\n{workers.tail()}")
        assert_exactly_once(fake, [first, second])
        assert outbox.read(redis, job_id_of(fake, second)).kind == "answer"  # the worker serves again
        print(
            f"Docker daemon restarted mid-question: first ended '{ended.kind}' (retries left {retries_left}) "
            f"{time.monotonic() - restarted_at:.1f} s after the restart; the next question answered"
        )
    finally:
        workers.stop()
        wait_for(lambda: not sandbox_containers(own), 30, "the suite's dockerd to hold no sandbox")


# ------------------------------------------------------------------------- leaked claims


@pytest.mark.parametrize("leaked", ["event", "question"])
def test_a_leaked_pending_claim_delays_the_question_but_never_loses_it(fake, http_bots, redis, leaked):
    from jobs import keys
    from jobs.queue import exists

    bot = http_bots(ASKBOX_PENDING_CLAIM_TTL="4")
    question = mention(fake, "why?")
    job_id = job_id_of(fake, question)
    key = keys.event_claim(fake.team_id, CHANNEL, question["ts"]) if leaked == "event" else keys.question_claim(job_id)
    # What a bot killed mid-way leaves; a question claim outlives the bot's 5 s wait for it.
    redis.set(key, "pending-of-a-dead-bot", ex=4 if leaked == "event" else 7)
    assert deliver(fake, bot, question) not in {0, 200}  # not acknowledged: Slack will deliver again
    assert not exists(redis, job_id)
    wait_for(lambda: not redis.exists(key), 10, "the leaked claim to lapse")
    assert deliver(fake, bot, question, retry=1) == 200
    assert exists(redis, job_id)
    assert deliver(fake, bot, question, retry=2) == 200  # and now a duplicate: acked, no second job
    assert redis.get(keys.event_claim(fake.team_id, CHANNEL, question["ts"])) == b"1"
    # The status message is posted after the ack: wait for it, then make sure there is one.
    wait_for(lambda: [m for m in _bot_messages(fake, question) if "On it" in (m.text or "")], 10, "the status")
    time.sleep(0.5)
    assert len([m for m in _bot_messages(fake, question) if "On it" in (m.text or "")]) == 1
