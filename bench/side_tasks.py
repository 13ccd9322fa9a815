"""A triaged small-talk answer end to end, next to the same message answered by the agent.

One run, one worker, through the queue: "thanks!" answered by triage (google-genai through
the model gateway, no container), then the same message with `agent` forced, answered by
the cursor stand-in and by the real Gemini CLI (through the same gateway). The Gemini API
is the fake from tests/fakes (answers at once), so the numbers are askbox's own overhead.

Runs its own redis-server, gateway and `askbox worker`. Needs Docker and the images.
Usage: python bench/side_tasks.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
from quick import parse_args  # noqa: E402  (bench/quick.py, beside this script)
from redis import Redis  # noqa: E402
from rq import Worker  # noqa: E402

from jobs.question import Origin, Question  # noqa: E402
from jobs.queue import enqueue  # noqa: E402
from jobs.settings import JobSettings  # noqa: E402
from jobs.side_tasks import triage  # noqa: E402
from sandbox import images  # noqa: E402
from tests.fakes.gemini_api import FakeGeminiAPI, RecordedRequest, Text  # noqa: E402
from tests.integration.gateway_helpers import GatewayProcess, gateway_env  # noqa: E402
from tests.integration.pipeline_helpers import RedisServer, Workers, wait_final, wait_for, worker_env  # noqa: E402
from tests.standins.build import build_cursor_standin  # noqa: E402

MESSAGE = "thanks!"


def answers(request: RecordedRequest) -> Text:
    if triage.SYSTEM.splitlines()[0] in request.system_text():
        return Text(json.dumps({"needs_code": False, "reply": "You're welcome!"}))
    return Text("You're welcome!")


def timed(redis: Redis, settings: JobSettings, workers: Workers, runs: int, **options: object) -> list[float]:
    samples = []
    for _ in range(runs):
        question = Question(
            origin=Origin(kind="terminal", user="bench", session=f"b-{time.time_ns()}"),
            text=MESSAGE,
            repo="demo",
            **options,
        )
        started = time.monotonic()
        job = enqueue(redis, question, settings).job
        final = wait_final(redis, job.id, timeout=180, workers=workers)
        samples.append(time.monotonic() - started)
        assert final["kind"] == "answer", final
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parse_args(parser, runs=1)
    image = build_cursor_standin(docker.from_env(), images.tag("sandbox"))
    with tempfile.TemporaryDirectory(prefix="askbox-bench-") as tmp, FakeGeminiAPI(default=answers) as api:
        root = Path(tmp)
        repo = root / "repo"
        repo.mkdir()
        (repo / "README.md").write_text("# demo\n")
        (root / "redis").mkdir()
        (root / "egress").mkdir()
        server = RedisServer(root / "redis").start()
        proxy = GatewayProcess(gateway_env(api.base_url, ["bench-key"], server.url)).start()
        env = worker_env(
            server,
            repo,
            root / "egress",
            ASKBOX_GATEWAY_SOCKET_DIR=str(proxy.socket_dir),
            ASKBOX_SIDE_TASKS="1",
            ASKBOX_CURSOR_IMAGE=image,
            CURSOR_API_KEY="bench",
        )
        workers = Workers(env)
        workers.start(1, log_dir=root)
        redis = Redis.from_url(server.url)
        settings = JobSettings(repos={"demo": repo})
        try:
            wait_for(lambda: Worker.all(connection=redis), 30, "the worker")
            rows = [
                ("triage (no container)", timed(redis, settings, workers, args.runs)),
                (
                    "agent: cursor stand-in",
                    timed(redis, settings, workers, args.runs, force_agent=True, agent="cursor"),
                ),
                ("agent: Gemini CLI", timed(redis, settings, workers, args.runs, force_agent=True, agent="gemini")),
            ]
        finally:
            workers.stop()
            proxy.stop()
            server.stop()
    print(f'"{MESSAGE}" end to end (enqueue -> final message), {args.runs} runs each:')
    print(f"{'path':<26} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, samples in rows:
        print(f"{name:<26} {statistics.median(samples):>9.2f} {min(samples):>7.2f} {max(samples):>7.2f}")


if __name__ == "__main__":
    main()
