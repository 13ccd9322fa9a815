"""Slack ingress under a burst: 200 mentions in 10 s to a real `askbox bot` (Socket Mode)
against the fake Slack, with a real Redis.

Prints, per mention, the time from the event leaving "Slack" to the bot's :eyes: reaction
and to its status message in the thread (p50/p99). No worker runs: this measures the
listener (validate, claim, enqueue, acknowledge), not answering.
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

from tests.fakes.slack import FakeSlack  # noqa: E402
from tests.integration.pipeline_helpers import ASKBOX, RedisServer  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mentions", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--channels", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeSlack() as fake:
        tmp_path = Path(tmp)
        (tmp_path / "redis").mkdir()
        (tmp_path / "repo").mkdir()
        server = RedisServer(tmp_path / "redis").start()
        fake.add_user("U0ASKER0001", name="asker")
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(SLACK_BOT_TOKEN=fake.bot_token, SLACK_APP_TOKEN=fake.app_token, ASKBOX_SLACK_API_URL=fake.api_url,
                   ASKBOX_REDIS_URL=server.url, ASKBOX_REPOS=json.dumps({"demo": str(tmp_path / "repo")}),
                   ASKBOX_MAX_WAITING="100000")
        bot = subprocess.Popen([ASKBOX, "bot"], env=env, stdout=(tmp_path / "bot.log").open("w"),
                               stderr=subprocess.STDOUT)
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
            fake.wait_until(lambda: len(fake.calls("chat.postMessage")) >= args.mentions, timeout=300)
            reacted = {(c.args["channel"], c.args["timestamp"]): c.time for c in fake.calls("reactions.add")}
            posted = {(c.args["channel"], c.args["thread_ts"]): c.time for c in fake.calls("chat.postMessage")}
            to_reaction = [reacted[k] - t for k, t in sent.items() if k in reacted]
            to_status = [posted[k] - t for k, t in sent.items() if k in posted]
        finally:
            bot.terminate()
            bot.wait(timeout=10)
            server.stop()
    print(f"{args.mentions} mentions in {args.seconds:g} s over {args.channels} channels, one bot process")
    for name, values in (("event -> :eyes: reaction", to_reaction), ("event -> status message", to_status)):
        print(f"{name:<26} p50 {statistics.median(values) * 1000:7.1f} ms  p99 {pct(values, .99) * 1000:7.1f} ms"
              f"  ({len(values)} of {args.mentions})")


if __name__ == "__main__":
    main()
