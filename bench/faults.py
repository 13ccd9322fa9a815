"""Soak under faults: N questions over T minutes from U users on W workers, with faults
injected at random, counted at the fake Slack: answered / lost / doubled, p50/p95 time
to answer, peak RSS of each process.

Real processes as in tests/integration/test_faults.py: one `askbox bot --http`, W
`askbox worker` processes, a redis-server of its own (AOF, fsync always), real sandboxes
running the cursor stand-in, the fake Slack (which redelivers an unacknowledged event,
compressed: every second or two, as Slack does after 0 s, 1 min and 5 min).

Faults (numbered as in the issue; one every ``--fault-every`` seconds on average):
1 the bot SIGKILLed (and restarted) while it handles events; 2 a worker started with
the test-only crash point after the outbox write (it and its horse die there);
3 a busy worker SIGKILLed mid-answer (and replaced); 4 Redis SIGKILLed and restarted
from its AOF; 6 a Slack 5xx/429 storm on chat.postMessage. (5, the Docker daemon
restart, needs a dockerd of the bench's own and is not injected here.)

A fault-free pass on the same schedule runs first (``--no-baseline`` skips it): the time
to answer under faults is printed as a ratio of it.

Usage: python bench/faults.py [--questions 200 --minutes 10 --users 20 --workers 4]
Needs Docker and the images (`askbox images build --offline`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
from proxies import stop_proxies  # noqa: E402  (bench/proxies.py, beside this script)
from quick import parse_args  # noqa: E402  (bench/quick.py, beside this script)

from jobs import outbox  # noqa: E402
from jobs.question import Origin, sanitize_id  # noqa: E402
from sandbox import images  # noqa: E402
from tests.fakes.slack import FakeSlack  # noqa: E402
from tests.integration.conftest import CHANNEL, bot_env  # noqa: E402
from tests.integration.pipeline_helpers import ASKBOX, RedisServer, Workers, descendants, free_port  # noqa: E402
from tests.standins.build import build_cursor_standin  # noqa: E402

SECRET = "bench-secret"
TEXTS = ["[transcript:subagent-sleep-v2] how does the queue work? {i}", "[read:README.md] what is this? {i}"]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p * (len(ordered) - 1))))] if ordered else float("nan")


@dataclass
class Asked:
    event: dict
    job_id: str
    sent: float
    acked: float | None = None
    answered: float | None = None


@dataclass
class Bench:
    fake: FakeSlack
    env: dict[str, str]
    tmp: Path
    redis_server: RedisServer
    workers: Workers
    bot: subprocess.Popen | None = None
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    peak_kib: Counter = field(default_factory=Counter)  # role -> peak VmHWM
    faults: Counter = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    crashers: set[int] = field(default_factory=set)  # pids of workers started to die at the crash point

    # -------------------------------------------------------------- processes

    def start_bot(self) -> None:
        port = free_port()
        env = {k: v for k, v in self.env.items() if k != "SLACK_APP_TOKEN"}
        log = (self.tmp / f"bot-{time.monotonic():.0f}.log").open("w")
        self.bot = subprocess.Popen(
            [ASKBOX, "bot", "--http", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{port}/slack/events"
        import socket

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("the bot did not listen")

    def sample_memory(self) -> None:
        while not self.stop.wait(1.0):
            roles = {
                "bot": [self.bot.pid] if self.bot else [],
                "redis": [self.redis_server.proc.pid] if self.redis_server.proc else [],
            }
            for i, proc in enumerate(self.workers.procs):
                if proc.poll() is None:
                    roles[f"worker-{i}"] = [proc.pid]
                    roles.setdefault("work-horse", []).extend(descendants(proc.pid))
            for role, pids in roles.items():
                for pid in pids:
                    try:
                        status = Path(f"/proc/{pid}/status").read_text()
                    except OSError:
                        continue
                    hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), 0)
                    key = "worker (each)" if role.startswith("worker-") else role
                    self.peak_kib[key] = max(self.peak_kib[key], hwm)

    # -------------------------------------------------------------- Slack's side

    def deliver(self, asked: Asked) -> None:
        """Deliver until acknowledged, retrying like Slack (compressed) for up to 2 minutes."""
        retry = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                status = self.fake.deliver_http(
                    self.url,
                    self.fake.event_callback(asked.event),
                    SECRET,
                    retry_num=retry or None,
                    retry_reason="http_timeout" if retry else None,
                    record=retry == 0,
                )[0]
            except OSError:
                status = 0
            if status == 200:
                asked.acked = time.monotonic()
                return
            retry += 1
            time.sleep(random.uniform(1, 2))

    # -------------------------------------------------------------- faults

    def inject(self, kind: int) -> None:
        self.faults[kind] += 1
        if kind == 1:
            if self.bot is not None:
                self.bot.kill()
                self.bot.wait()
            self.start_bot()
        elif kind == 2:
            with self.lock:
                self.workers.env = {**self.env, "ASKBOX_TEST_CRASH_AT": "after-outbox"}
                [proc] = self.workers.start(1, log_dir=self.tmp)
                self.crashers.add(proc.pid)
                self.workers.env = self.env
        elif kind == 3:
            alive = [p for p in self.workers.procs if p.poll() is None and descendants(p.pid)]
            if alive:
                self.workers.kill(random.choice(alive))
        elif kind == 4:
            self.redis_server.crash()
            time.sleep(0.5)
            self.redis_server.start()
        elif kind == 6:
            self.fake.server_error("chat.postMessage", times=2, after_effect=True)
            self.fake.server_error("chat.postMessage", times=2)
            self.fake.rate_limit("chat.postMessage", times=3, retry_after=1)

    def keep_workers(self, count: int) -> None:
        """Replace dead workers (killed, or crashed at the crash point) up to ``count``."""
        while not self.stop.wait(1.0):
            with self.lock:
                ordinary = [p for p in self.workers.procs if p.poll() is None and p.pid not in self.crashers]
                if len(ordinary) < count:
                    self.workers.start(count - len(ordinary), log_dir=self.tmp)


def finals_of(fake: FakeSlack, asked: Asked) -> int:
    count = 0
    for message in fake.thread(CHANNEL, asked.event["ts"]):
        meta = message.metadata or {}
        payload = meta.get("event_payload") or {}
        if (
            message.is_bot
            and not message.deleted
            and meta.get("event_type") == outbox.EVENT_TYPE
            and payload.get("job") == asked.job_id
            and payload.get("part") in {"last", "outcome"}
        ):
            count += 1
    return count


def soak(args: argparse.Namespace, image: str, client: docker.DockerClient, faults: bool) -> dict:
    """One soak (with faults, or the fault-free baseline on the same schedule): its figures."""
    rng = random.Random(args.seed)  # the same send times, users and texts for both passes
    with tempfile.TemporaryDirectory() as tmp, FakeSlack() as fake:
        tmp_path = Path(tmp)
        repo = tmp_path / "repo"
        repo.mkdir()
        (repo / "README.md").write_text("# demo repo\n")
        egress = tmp_path / "egress"
        egress.mkdir()
        os.chmod(egress, 0o755)
        users = [f"U0BENCH{i:04d}" for i in range(args.users)]
        for user in users:
            fake.add_user(user, name=user.lower())
        server = RedisServer(tmp_path / "redis")
        server.directory.mkdir()
        server.start()
        env = {
            **bot_env(fake, server.url, repo),
            "SLACK_SIGNING_SECRET": SECRET,
            "ASKBOX_AGENT": "cursor",
            "ASKBOX_CURSOR_IMAGE": image,
            "CURSOR_API_KEY": "k",
            "ASKBOX_EGRESS_SOCKET_DIR": str(egress),
            "ASKBOX_MAINTENANCE_INTERVAL": "5",
            "ASKBOX_JOB_MONITORING_INTERVAL": "1",
            "ASKBOX_WORKER_TTL": "20",
            "ASKBOX_REAPER_INTERVAL": "5",
            "ASKBOX_OUTBOX_SWEEP_INTERVAL": "2",
            "ASKBOX_PENDING_CLAIM_TTL": "3",
            "ASKBOX_MAX_WAITING": "10000",
            "ASKBOX_USER_MAX_WAITING": "1000",
        }
        bench = Bench(fake, env, tmp_path, server, Workers(env))
        asked: list[Asked] = []
        try:
            bench.start_bot()
            bench.workers.start(args.workers, log_dir=tmp_path)

            def note_answers() -> None:  # the time an answer is first seen, while questions still arrive
                for item in list(asked):
                    if item.answered is None and finals_of(fake, item):
                        item.answered = time.monotonic()

            def watch_answers() -> None:
                while not bench.stop.wait(0.5):
                    note_answers()

            for target in (bench.sample_memory, lambda: bench.keep_workers(args.workers), watch_answers):
                threading.Thread(target=target, daemon=True).start()
            duration = args.minutes * 60
            start = time.monotonic()
            sends = sorted(rng.uniform(0, duration) for _ in range(args.questions))
            faults_rng = random.Random(args.seed + 1)
            next_fault = start + faults_rng.expovariate(1 / args.fault_every) if faults else float("inf")
            senders = []
            for i, at in enumerate(sends):
                while time.monotonic() < start + at:
                    if time.monotonic() >= next_fault:
                        kind = faults_rng.choice([1, 2, 3, 4, 6])
                        print(f"[{time.monotonic() - start:6.1f}s] fault {kind}", flush=True)
                        bench.inject(kind)
                        next_fault = time.monotonic() + faults_rng.expovariate(1 / args.fault_every)
                    time.sleep(0.05)
                user = rng.choice(users)
                event = fake.app_mention(user, CHANNEL, f"<@{fake.bot_user_id}> " + rng.choice(TEXTS).format(i=i))
                origin = Origin(
                    kind="slack",
                    user=user,
                    team=fake.team_id,
                    channel=CHANNEL,
                    thread_ts=event["ts"],
                    message_ts=event["ts"],
                )
                item = Asked(event, sanitize_id(origin.event_key() or ""), time.monotonic())
                asked.append(item)
                sender = threading.Thread(target=bench.deliver, args=(item,), daemon=True)
                sender.start()
                senders.append(sender)
            for sender in senders:
                sender.join(timeout=150)
            deadline = time.monotonic() + args.drain
            while time.monotonic() < deadline:
                note_answers()
                if all(item.answered for item in asked if item.acked):
                    break
                time.sleep(0.5)
            time.sleep(5)  # a sweep round more: a late second final would show now
        finally:
            bench.stop.set()
            bench.workers.stop()
            if bench.bot is not None:
                bench.bot.terminate()
                bench.bot.wait(timeout=15)
            server.stop()
            stop_proxies(client, egress)
        finals = [finals_of(fake, item) for item in asked]
        times = [item.answered - item.sent for item in asked if item.answered]
        return {
            "asked": len(asked),
            "answered": sum(1 for item, n in zip(asked, finals) if item.acked and n == 1),
            "lost": sum(1 for item, n in zip(asked, finals) if item.acked and n == 0),
            "doubled": sum(1 for n in finals if n > 1),
            "never_acked": sum(1 for item in asked if not item.acked),
            "faults": dict(sorted(bench.faults.items())),
            "p50": statistics.median(times) if times else float("nan"),
            "p95": pct(times, 0.95),
            "peak_rss_mib": {k: round(v / 1024) for k, v in sorted(bench.peak_kib.items())},
        }


def report(name: str, r: dict) -> None:
    print(
        f"{name:9} answered {r['answered']}/{r['asked']}  lost {r['lost']}  doubled {r['doubled']}  "
        f"never acknowledged {r['never_acked']}  faults {r['faults']}  time to answer p50 {r['p50']:.1f} s  "
        f"p95 {r['p95']:.1f} s"
    )
    print(f"{'':9} peak RSS: " + ", ".join(f"{role} {mib} MiB" for role, mib in r["peak_rss_mib"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--fault-every", type=float, default=20.0, help="mean seconds between faults")
    parser.add_argument("--drain", type=float, default=240.0, help="seconds to wait for the last answers")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-baseline", action="store_true", help="skip the fault-free pass on the same schedule")
    args = parse_args(parser, questions=4, minutes=0.5, users=2, workers=2, fault_every=10.0, drain=120.0)
    client = docker.from_env()
    image = build_cursor_standin(client, images.tag("sandbox"))
    print(f"{args.questions} questions over {args.minutes:g} min from {args.users} users on {args.workers} workers")
    baseline = None if args.no_baseline else soak(args, image, client, faults=False)
    faulty = soak(args, image, client, faults=True)
    print()
    if baseline is not None:
        report("no faults", baseline)
    report("faults", faulty)
    if baseline is not None:
        print(
            f"time to answer with faults / without: p50 {faulty['p50'] / baseline['p50']:.2f}x  "
            f"p95 {faulty['p95'] / baseline['p95']:.2f}x"
        )
    print(json.dumps({"baseline": baseline, "faults": faulty}))


if __name__ == "__main__":
    main()
