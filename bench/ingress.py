"""Slack's acknowledgement under a burst: real `askbox bot --http` processes against the fake
Slack (answering instantly) and a real Redis, no worker.

300 distinct mentions, plus 200 of Slack's retries (the same payload with X-Slack-Retry-Num)
and `message.*` twins (the same message as a second event), from 40 connections at once,
signed like Slack's. Prints the acknowledgement (the HTTP response) latency p50/p99/max,
the events per second per bot process, and checks exactly once afterwards: one job, one
status message and one `eyes` reaction per mention. With ``--baseline PATH`` (another
checkout, e.g. `git worktree add /tmp/main main`) its bot is measured in the same run.
Usage: python bench/ingress.py [--mentions N] [--extra N] [--connections C] [--processes P] [--baseline PATH]
                               [--slack-latency SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quick import parse_args  # noqa: E402  (bench/quick.py, beside this script)

from tests.fakes.slack import FakeSlack  # noqa: E402
from tests.integration.pipeline_helpers import ASKBOX, RedisServer, free_port  # noqa: E402

SECRET = "bench-signing-secret"
ASKER = "U0ASKER0001"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p * (len(ordered) - 1))))]


def start_bots(code: Path | None, env: dict[str, str], count: int, log_dir: Path) -> tuple[list[subprocess.Popen], int]:
    """``count`` HTTP bot processes of the checkout ``code`` (None: this one) on one port."""
    port = free_port()
    if code is None:
        command = [ASKBOX, "bot", "--http", "--port", str(port)]
        bot_env = env
    else:  # another checkout's code, with this venv's libraries
        command = [
            sys.executable,
            "-c",
            "import sys; from bot.cli import main; sys.exit(main())",
            "bot",
            "--http",
            "--port",
            str(port),
        ]
        bot_env = {**env, "PYTHONPATH": str(code)}
    if count > 1:
        command += ["--processes", str(count)]
    procs = [
        subprocess.Popen(
            command,
            env=bot_env,
            cwd=str(code or ROOT),
            stdout=(log_dir / f"bot-{port}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
    ]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if procs[0].poll() is not None:
            raise RuntimeError(f"the bot exited: {(log_dir / f'bot-{port}.log').read_text()[-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return procs, port
        time.sleep(0.1)
    raise RuntimeError("the bot did not listen within 30 s")


def burst(fake: FakeSlack, url: str, mentions: int, extra: int, connections: int, channels: int) -> dict:
    """Deliver the burst; the acknowledgement latencies and the wall time."""
    rng = random.Random(19)
    events = []
    firsts = []
    for i in range(mentions):
        channel = f"C0BENCH{i % channels:04d}"
        mention = fake.app_mention(ASKER, channel, f"<@{fake.bot_user_id}> question {i}")
        payload = fake.event_callback(mention)
        fake.record_event(mention)
        firsts.append((payload, None))
        events.append(mention)
    extras = []
    for _ in range(extra):
        payload, _retry = rng.choice(firsts)
        if rng.random() < 0.5:
            extras.append((payload, 1))  # Slack's retry: the same event_id, X-Slack-Retry-Num
        else:
            event = payload["event"]
            twin = fake.message(ASKER, event["channel"], event["text"], ts=event["ts"])
            extras.append((fake.event_callback(twin), None))  # the message.* twin of the mention
    deliveries = firsts + extras
    rng.shuffle(deliveries)
    # Every first delivery comes before its own retry (Slack retries only what it sent).
    deliveries.sort(key=lambda d: d[1] or 0)

    def deliver(item: tuple[dict, int | None]) -> tuple[float, int]:
        payload, retry = item
        started = time.monotonic()
        status, _ = fake.deliver_http(
            url, payload, SECRET, retry_num=retry, retry_reason="http_timeout" if retry else None, record=False
        )
        return time.monotonic() - started, status

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        results = list(pool.map(deliver, deliveries))
    wall = time.monotonic() - started
    return {
        "latencies": [r[0] for r in results],
        "statuses": [r[1] for r in results],
        "wall": wall,
        "events": events,
        "deliveries": len(deliveries),
    }


def exactly_once(fake: FakeSlack, redis_url: str, events: list[dict], timeout: float) -> str:
    """One job, one status message and one eyes reaction per mention (waits for the posts)."""
    from redis import Redis

    redis = Redis.from_url(redis_url)

    def counts() -> tuple[int, int, int]:
        jobs = sum(1 for _ in redis.scan_iter("rq:job:slack-*-C0BENCH*", count=1000))
        statuses = sum(1 for e in events for m in fake.thread(e["channel"], e["ts"]) if m.is_bot)
        eyes = sum(1 for e in events if "eyes" in (fake.get_message(e["channel"], e["ts"]).reactions or {}))
        return jobs, statuses, eyes

    deadline = time.monotonic() + timeout
    while counts() != (len(events),) * 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    jobs, statuses, eyes = counts()
    ok = (jobs, statuses, eyes) == (len(events),) * 3
    return f"{'exactly once' if ok else 'NOT exactly once'}: {jobs} jobs, {statuses} status messages, {eyes} reactions"


def measure(name: str, code: Path | None, args: argparse.Namespace, env: dict[str, str], tmp: Path) -> None:
    redis_dir = tmp / f"redis-{name}"
    redis_dir.mkdir()
    server = RedisServer(redis_dir).start()
    try:
        with FakeSlack(latency=args.slack_latency) as fake:
            fake.add_user(ASKER, name="asker")
            bot_env = {
                **env,
                "SLACK_BOT_TOKEN": fake.bot_token,
                "ASKBOX_SLACK_API_URL": fake.api_url,
                "ASKBOX_REDIS_URL": server.url,
            }
            procs, port = start_bots(code, bot_env, args.processes, tmp)
            try:
                url = f"http://127.0.0.1:{port}/slack/events"
                fake.deliver_http(url, fake.event_callback(fake.app_mention(ASKER, "C0WARMUP001", "warm up")), SECRET)
                got = burst(fake, url, args.mentions, args.extra, args.connections, args.channels)
                once = exactly_once(fake, server.url, got["events"], timeout=60 + args.mentions / 10)
            finally:
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    proc.wait(timeout=15)
    finally:
        server.stop()
    latencies = got["latencies"]
    refused = sum(1 for s in got["statuses"] if s != 200)
    per_process = got["deliveries"] / got["wall"] / args.processes
    print(
        f"{name:<9} ack p50 {statistics.median(latencies) * 1000:7.1f} ms  p99 {pct(latencies, 0.99) * 1000:7.1f} ms  "
        f"max {max(latencies) * 1000:7.1f} ms  | {per_process:6.1f} events/s per bot process "
        f"({got['deliveries']} deliveries, {refused} not acked) | {once}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mentions", type=int, default=300)
    parser.add_argument("--extra", type=int, default=200, help="retries and message.* twins on top")
    parser.add_argument("--connections", type=int, default=40)
    parser.add_argument("--channels", type=int, default=20)
    parser.add_argument("--processes", type=int, default=1, help="bot processes behind the one port")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure the same way (before)")
    parser.add_argument(
        "--slack-latency",
        type=float,
        default=0.0,
        help="seconds each Slack Web API call takes (0: the fake answers at once)",
    )
    args = parse_args(parser, mentions=6, extra=4, connections=4, channels=2)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith(("SLACK_", "ASKBOX_"))}
    env.update(
        SLACK_SIGNING_SECRET=SECRET,
        ASKBOX_REPOS=json.dumps({"demo": str(ROOT)}),
        ASKBOX_MAX_WAITING="100000",
        ASKBOX_USER_MAX_WAITING="100000",
        ASKBOX_HTTP_HOST="127.0.0.1",
        ASKBOX_REPO_ACCESS=json.dumps({"*": {"channels": ["*"]}}),
    )
    print(
        f"{args.mentions} mentions + {args.extra} retries and message.* twins from {args.connections} "
        f"connections, {args.processes} bot process(es) behind one port, Slack answering in "
        f"{args.slack_latency * 1000:.0f} ms",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            measure("baseline", args.baseline.resolve(), args, env, Path(tmp))
        measure("this tree", None, args, env, Path(tmp))
    print("acknowledgement latency and events per second per bot process: done")


if __name__ == "__main__":
    main()
