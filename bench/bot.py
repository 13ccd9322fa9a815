"""Slack ingress under a burst: 200 mentions in 10 s to a real `askbox bot` (Socket Mode)
against the fake Slack, with a real Redis.

Prints, per mention, the time from the event leaving "Slack" to the bot's :eyes: reaction
and to its status message in the thread (p50/p99): the listener alone (validate, claim,
enqueue, acknowledge), no worker. Then, with one worker and the cursor stand-in, the lag
from the agent's first event to the thread's first update, and from the final event to
the answer in the thread.
Usage: python bench/bot.py [--mentions N] [--seconds S] [--channels C]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proxies import stop_proxies  # noqa: E402  (bench/proxies.py, beside this script)
from quick import parse_args  # noqa: E402  (bench/quick.py, beside this script)

from tests.fakes.slack import FakeSlack  # noqa: E402
from tests.integration.pipeline_helpers import ASKBOX, RedisServer  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p * (len(ordered) - 1))))]


def agent_to_slack_lag(fake: FakeSlack, env: dict[str, str], tmp_path: Path, redis_url: str, runs: int) -> None:
    """With a worker and the cursor stand-in: agent event -> the thread shows it."""
    import docker
    from redis import Redis

    from jobs.queue import fetch
    from sandbox import images
    from tests.integration.pipeline_helpers import Workers
    from tests.standins.build import build_cursor_standin

    image = build_cursor_standin(docker.from_env(), images.tag("sandbox"))
    (tmp_path / "repo" / "README.md").write_text("# bench repo\n")
    workers = Workers(
        {
            **env,
            "ASKBOX_AGENT": "cursor",
            "ASKBOX_CURSOR_IMAGE": image,
            "CURSOR_API_KEY": "k",
            "ASKBOX_EGRESS_SOCKET_DIR": str(tmp_path / "egress"),
        }
    )
    workers.start(1, log_dir=tmp_path)
    redis = Redis.from_url(redis_url)
    progress, final = [], []
    try:
        for i in range(runs):
            channel = f"C0LAG{i:05d}"
            mention = fake.app_mention("U0ASKER0001", channel, f"<@{fake.bot_user_id}> [read:README.md] what? {i}")
            fake.push_event(mention)
            fake.wait_until(
                lambda c=channel, m=mention: "white_check_mark" in fake.get_message(c, m["ts"]).reactions, timeout=120
            )
            job = next(fetch(redis, k.decode().split(":")[-1]) for k in redis.keys(f"askbox:question:*{channel}*"))
            meta = job.get_meta(refresh=True)
            calls = [
                c
                for c in fake.calls()
                if c.channel == channel
                and c.method in ("chat.update", "chat.appendStream", "chat.startStream", "assistant.threads.setStatus")
            ]
            first_update = min(c.time for c in calls if c.time >= meta["first_event_at"])
            answer = min(
                c.time for c in fake.calls("chat.postMessage") if c.channel == channel and c.time >= meta["final_at"]
            )
            progress.append(first_update - meta["first_event_at"])
            final.append(answer - meta["final_at"])
    finally:
        workers.stop()
        stop_proxies(docker.from_env(), tmp_path / "egress")
    print(
        f"agent's first event -> thread updated    p50 {statistics.median(progress) * 1000:7.1f} ms  "
        f"max {max(progress) * 1000:7.1f} ms  ({runs} questions)"
    )
    print(
        f"final event -> answer posted in thread   p50 {statistics.median(final) * 1000:7.1f} ms  "
        f"max {max(final) * 1000:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mentions", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--channels", type=int, default=20)
    parser.add_argument("--lag-runs", type=int, default=5, help="questions answered for the lag numbers")
    args = parse_args(parser, mentions=6, seconds=1.0, channels=2, lag_runs=1)
    with tempfile.TemporaryDirectory() as tmp, FakeSlack() as fake:
        tmp_path = Path(tmp)
        (tmp_path / "redis").mkdir()
        (tmp_path / "repo").mkdir()
        server = RedisServer(tmp_path / "redis").start()
        fake.add_user("U0ASKER0001", name="asker")
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(
            SLACK_BOT_TOKEN=fake.bot_token,
            SLACK_APP_TOKEN=fake.app_token,
            ASKBOX_SLACK_API_URL=fake.api_url,
            ASKBOX_REDIS_URL=server.url,
            ASKBOX_REPOS=json.dumps({"demo": str(tmp_path / "repo")}),
            ASKBOX_MAX_WAITING="100000",
            ASKBOX_USER_MAX_WAITING="100000",
            # Every channel may ask (jobs/access.py): the bench's channels have no repo of their own.
            ASKBOX_REPO_ACCESS=json.dumps({"*": {"channels": ["*"]}}),
        )
        bot = subprocess.Popen(
            [ASKBOX, "bot"], env=env, stdout=(tmp_path / "bot.log").open("w"), stderr=subprocess.STDOUT
        )
        try:
            fake.wait_connections(1, timeout=30)
            channels = [f"C0BENCH{i:04d}" for i in range(args.channels)]
            sent: dict[tuple[str, str], float] = {}
            gap = args.seconds / args.mentions
            start = time.time()
            for i in range(args.mentions):
                channel = channels[i % len(channels)]
                mention = fake.app_mention("U0ASKER0001", channel, f"<@{fake.bot_user_id}> question {i}")
                sent[(channel, mention["ts"])] = time.time()
                fake.push_event(mention)
                time.sleep(max(0.0, start + (i + 1) * gap - time.time()))
            fake.wait_until(lambda: len(fake.calls("chat.postMessage")) >= args.mentions, timeout=60 + args.seconds)
            reacted = {(c.args["channel"], c.args["timestamp"]): c.time for c in fake.calls("reactions.add")}
            posted = {(c.args["channel"], c.args["thread_ts"]): c.time for c in fake.calls("chat.postMessage")}
            to_reaction = [reacted[k] - t for k, t in sent.items() if k in reacted]
            to_status = [posted[k] - t for k, t in sent.items() if k in posted]
            print(f"{args.mentions} mentions in {args.seconds:g} s over {args.channels} channels, one bot process")
            for name, values in (("event -> :eyes: reaction", to_reaction), ("event -> status message", to_status)):
                print(
                    f"{name:<26} p50 {statistics.median(values) * 1000:7.1f} ms  "
                    f"p99 {pct(values, 0.99) * 1000:7.1f} ms  ({len(values)} of {args.mentions})"
                )
            subprocess.run(["redis-cli", "-u", server.url, "flushdb"], check=True, capture_output=True)
            if args.lag_runs:
                agent_to_slack_lag(fake, env, tmp_path, server.url, args.lag_runs)
        finally:
            bot.terminate()
            bot.wait(timeout=10)
            server.stop()


if __name__ == "__main__":
    main()
