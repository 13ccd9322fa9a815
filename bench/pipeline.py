"""Pipeline overhead and throughput, with a trivial stand-in agent.

- enqueue -> the agent's first output (p50/p95), next to a bare sandbox run (Sandbox.run ->
  first line of the same stand-in image) measured in the same run;
- questions per minute with 1, 2 and 4 workers.

Runs its own redis-server and `askbox worker` processes. Needs Docker and the images
(`askbox images build --offline`). Usage: python bench/pipeline.py [--questions N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
from proxies import stop_proxies  # noqa: E402  (bench/proxies.py, beside this script)
from quick import parse_args  # noqa: E402  (bench/quick.py, beside this script)
from redis import Redis  # noqa: E402
from rq import Worker  # noqa: E402

from jobs import queue as jobs_queue  # noqa: E402
from jobs.question import Origin, Question  # noqa: E402
from jobs.settings import JobSettings  # noqa: E402
from sandbox import Sandbox, SandboxSpec, images  # noqa: E402
from sandbox.agents.adapters import CursorAgent  # noqa: E402
from sandbox.agents.settings import AgentSettings, CursorAgentSettings  # noqa: E402
from tests.integration.pipeline_helpers import RedisServer, Workers, wait_for  # noqa: E402
from tests.standins.build import build_cursor_standin  # noqa: E402

PROMPT = "[read:README.md] what is this?"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p * (len(ordered) - 1))))]


def bare_first_line(image: str, repo: Path, runs: int) -> list[float]:
    sandbox = Sandbox()
    agent = CursorAgent(AgentSettings(cursor=CursorAgentSettings(api_key="k", image=image)))
    spec = SandboxSpec(
        image=image,
        command=agent.command(None),
        stdin=PROMPT.encode(),
        env=agent.env(),
        secret_env=agent.secret_env(),
        repo=repo,
    )
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        with sandbox.run(spec.model_copy(update={"run_id": os.urandom(8).hex()})) as run:
            for _line in run:
                samples.append(time.perf_counter() - start)
                run.stop()
                break
    return samples


def queued_first_output(redis: Redis, settings: JobSettings, runs: int) -> list[float]:
    samples = []
    for i in range(runs):
        question = Question(
            origin=Origin(kind="terminal", user=f"latency{i}"), text=f"{PROMPT} {i}", repo="demo", fresh=True
        )
        start = time.time()
        job = jobs_queue.enqueue(redis, question, settings).job
        first = wait_for(lambda j=job: j.get_meta(refresh=True).get("first_event_at"), 60, "first output", 0.01)
        samples.append(float(first) - start)  # type: ignore[arg-type]
        wait_for(lambda j=job: j.get_meta(refresh=True).get("final"), 60, "final", every=0.05)
    return samples


def throughput(redis: Redis, settings: JobSettings, workers: Workers, count: int, n: int, log_dir: Path) -> float:
    redis.flushdb()
    procs = workers.start(count, log_dir=log_dir)
    wait_for(lambda: len(Worker.all(connection=redis)) >= count, 30, "workers")
    ids = []
    start = time.monotonic()
    for i in range(n):  # distinct users: the per-user limit is not what is measured here
        q = Question(origin=Origin(kind="terminal", user=f"tp{i}"), text=f"{PROMPT} {i}", repo="demo", fresh=True)
        ids.append(jobs_queue.enqueue(redis, q, settings).job.id)
    for job_id in ids:
        wait_for(lambda j=job_id: jobs_queue.fetch(redis, j).get_meta(refresh=True).get("final"), 300, "final", 0.05)
    elapsed = time.monotonic() - start
    for proc in procs:
        workers.kill(proc)
    return n / elapsed * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--latency-runs", type=int, default=10)
    args = parse_args(parser, questions=2, latency_runs=2)
    client = docker.from_env()
    image = build_cursor_standin(client, images.tag("sandbox"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        repo = tmp_path / "repo"
        repo.mkdir()
        (repo / "README.md").write_text("# demo repo\n")
        server = RedisServer(tmp_path / "redis")
        server.directory.mkdir()
        server.start()
        redis = Redis.from_url(server.url)
        settings = JobSettings(repos={"demo": repo}, max_waiting=10_000)
        env = {
            **os.environ,
            "ASKBOX_REDIS_URL": server.url,
            "ASKBOX_AGENT": "cursor",
            "ASKBOX_CURSOR_IMAGE": image,
            "CURSOR_API_KEY": "k",
            "ASKBOX_REPOS": f'{{"demo": "{repo}"}}',
            "ASKBOX_EGRESS_SOCKET_DIR": str(tmp_path / "egress"),
        }
        workers = Workers(env)
        try:
            bare = bare_first_line(image, repo, args.latency_runs)
            workers.start(1, log_dir=tmp_path)
            wait_for(lambda: Worker.all(connection=redis), 30, "a worker")
            queued_first_output(redis, settings, 2)  # warm-up: the egress proxy, caches
            queued = queued_first_output(redis, settings, args.latency_runs)
            workers.stop()
            workers.procs.clear()
            print(f"{args.latency_runs} runs each, stand-in agent image {image}")
            print(
                f"bare sandbox run -> first line       p50 {statistics.median(bare) * 1000:7.0f} ms  "
                f"p95 {pct(bare, 0.95) * 1000:7.0f} ms"
            )
            print(
                f"enqueue -> agent's first output       p50 {statistics.median(queued) * 1000:7.0f} ms  "
                f"p95 {pct(queued, 0.95) * 1000:7.0f} ms"
            )
            print(
                f"ratio queued / bare: p50 {statistics.median(queued) / statistics.median(bare):.2f}x  "
                f"p95 {pct(queued, 0.95) / pct(bare, 0.95):.2f}x"
            )
            base = None
            for count in (1, 2, 4):
                qpm = throughput(redis, settings, workers, count, args.questions, tmp_path)
                base = base or qpm
                print(f"{count} worker(s): {qpm:6.1f} questions/minute ({qpm / base:.2f}x of 1 worker)")
        finally:
            workers.stop()
            server.stop()
            stop_proxies(client, tmp_path / "egress")


if __name__ == "__main__":
    main()
