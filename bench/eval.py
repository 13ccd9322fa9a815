"""``askbox eval``'s own overhead per question, against the bare pipeline, in the same run.

With the cursor-agent stand-in as a trivial agent (a real sandbox reading a file), its own
Redis and a real `askbox worker`, the same questions run, in alternating rounds:

- inline: the bare pipeline (``jobs.pipeline.answer`` with a destination that does
  nothing) against the harness (``jobs.evals.harness.Harness``, ``inline``): its Question,
  record, progress callback and thread pool;
- queue: a bare ``enqueue`` and a wait for the job's final (as fast as Redis answers)
  against the harness through the queue (its poll, its metering read-back);

then the report (JSON, Markdown, HTML) is written for all of them and timed apart.
Each round times its questions as a whole, so a round's time per question is comparable
between the bare loop and the harness (both include the same outliers, e.g. an egress
proxy that starts slowly). Overhead per question = the harness's time per question - the
bare loop's (p50 over the rounds of each).

Needs Docker and the images (`askbox images build --offline`). Usage:
python bench/eval.py [--questions N] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
from proxies import stop_proxies  # noqa: E402  (bench/proxies.py, beside this script)
from quick import parse_args  # noqa: E402  (bench/quick.py, beside this script)
from redis import Redis  # noqa: E402
from rq import Worker  # noqa: E402

from sandbox import images  # noqa: E402
from tests.integration.pipeline_helpers import RedisServer, Workers, wait_for  # noqa: E402
from tests.standins.build import build_cursor_standin  # noqa: E402

QUESTION = "[read:README.md] what is this? ({n})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=5, help="per round and mode")
    parser.add_argument("--rounds", type=int, default=5)
    args = parse_args(parser, questions=1, rounds=1)
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
        env = {
            "ASKBOX_REDIS_URL": server.url,
            "ASKBOX_AGENT": "cursor",
            "ASKBOX_CURSOR_IMAGE": image,
            "CURSOR_API_KEY": "k",
            "ASKBOX_REPOS": f'{{"demo": "{repo}"}}',
            "ASKBOX_EGRESS_SOCKET_DIR": str(tmp_path / "egress"),
            "ASKBOX_MAX_WAITING": "10000",
            "ASKBOX_REPO_MIRRORS": str(tmp_path / "mirrors"),
            "ASKBOX_REPO_SNAPSHOTS": str(tmp_path / "snapshots"),
        }
        os.environ.update(env)  # this process's settings tree is the worker's
        workers = Workers({**os.environ, **env, "PYTHONUNBUFFERED": "1"})
        try:
            measure(Redis.from_url(server.url), workers, tmp_path, args.questions, args.rounds)
        finally:
            workers.stop()
            server.stop()
            stop_proxies(client, tmp_path / "egress")


def measure(redis: Redis, workers: Workers, tmp_path: Path, per_round: int, rounds: int) -> None:
    from jobs.evals import save
    from jobs.evals.harness import Harness, Options
    from jobs.evals.questions import EvalQuestion
    from jobs.evals.report import Report, RunInfo, totals
    from jobs.pipeline import Destination, Run, answer
    from jobs.question import Origin, Question
    from jobs.queue import enqueue
    from jobs.settings import Settings

    settings = Settings.load()
    counter = iter(range(10**6))

    def bare(one: Callable[[], float]) -> float:
        return sum(one() for _ in range(per_round)) / per_round

    def bare_question() -> Question:
        n = next(counter)
        return Question(
            origin=Origin(kind="terminal", user="bench", session=f"bare-{n}"),
            text=QUESTION.format(n=n),
            repo="demo",
            fresh=True,
            id=f"bare-{n}",
        )

    def bare_inline() -> float:
        question = bare_question()
        started = time.perf_counter()
        final = answer(
            Run(
                question,
                settings,
                redis,
                Destination(),
                run_id=question.id,
                allow_paths=True,
                labels={"job": question.id, "user": "bench"},
                one_off=True,
            )
        )
        assert final.kind == "answer", final
        return time.perf_counter() - started

    def bare_queue() -> float:
        question = bare_question()
        started = time.perf_counter()
        job = enqueue(redis, question, settings.jobs).job
        wait_for(lambda: job.get_meta(refresh=True).get("final"), 120, "the final", every=0.005)
        return time.perf_counter() - started

    def harnessed(inline: bool) -> tuple[float, list]:
        questions = [EvalQuestion(line=i + 1, question=QUESTION.format(n=next(counter))) for i in range(per_round)]
        harness = Harness(
            settings, redis, Options(repo="demo", inline=inline, user="bench"), on_record=lambda record: None
        )
        started = time.perf_counter()
        records = harness.run(questions)
        assert [r.outcome for r in records] == ["answer"] * per_round, records
        return (time.perf_counter() - started) / per_round, records

    bare_inline()  # warm-up: the snapshot, the egress proxy's image, imports
    times: dict[str, list[float]] = {"bare inline": [], "eval inline": [], "bare queue": [], "eval queue": []}
    everything: list = []
    for _ in range(rounds):
        times["bare inline"].append(bare(bare_inline))
        per_question, records = harnessed(inline=True)
        times["eval inline"].append(per_question)
        everything += records
    workers.start(1, log_dir=tmp_path)
    wait_for(lambda: Worker.all(connection=redis), 30, "a worker")
    bare_queue()  # warm-up of the worker
    for _ in range(rounds):
        times["bare queue"].append(bare(bare_queue))
        per_question, records = harnessed(inline=False)
        times["eval queue"].append(per_question)
        everything += records
    everything = [r.model_copy(update={"line": i + 1}) for i, r in enumerate(everything)]
    started = time.perf_counter()
    report = Report(
        run=RunInfo(questions_file="bench", started_at="-", mode="both"), records=everything, totals=totals(everything)
    )
    save(report, tmp_path / "report")
    writing = time.perf_counter() - started

    print(f"{rounds} rounds of {per_round} question(s) per mode, cursor stand-in, one worker")
    for name, samples in times.items():
        print(
            f"{name:12} per question  p50 {statistics.median(samples) * 1000:8.1f} ms  "
            f"min {min(samples) * 1000:8.1f} ms  max {max(samples) * 1000:8.1f} ms  (over {len(samples)} rounds)"
        )
    for mode in ("inline", "queue"):
        overhead = statistics.median(times[f"eval {mode}"]) - statistics.median(times[f"bare {mode}"])
        print(f"eval harness overhead per question, {mode}: {overhead * 1000:+.1f} ms at p50")
    print(
        f"writing the report ({len(everything)} questions: JSON, Markdown, HTML): {writing * 1000:.1f} ms, "
        f"{writing / len(everything) * 1000:.2f} ms per question"
    )


if __name__ == "__main__":
    main()
