"""``askbox ask`` through the queue: enqueue, then follow the job's progress live."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path

from redis import Redis
from rq import Worker

from bot.cli import _err
from jobs.cancel import cancel
from jobs.question import Origin, Question
from jobs.queue import QueueFull, enqueue, fetch
from jobs.settings import JobSettings

EXIT_NO_WORKER = 3


def ask_through_queue(args: argparse.Namespace, poll: float = 0.3) -> int:
    settings = JobSettings()
    redis = Redis.from_url(settings.redis_url)
    if not Worker.all(connection=redis):
        _err("no worker is running: start one with `askbox worker`, or answer here with --inline")
        return EXIT_NO_WORKER
    repo = args.repo
    if repo is None and not settings.repos:
        repo = "."
    if repo is not None and repo not in settings.repos and Path(repo).is_dir():
        repo = str(Path(repo).resolve())  # the worker's working directory is not ours
    user = getpass.getuser()
    question = Question(
        origin=Origin(kind="terminal", user=user, session=args.thread),
        text=args.question,
        repo=repo,
        agent=args.agent,
        model=args.model,
        fresh=args.fresh,
        priority=args.priority,
    )
    try:
        queued = enqueue(redis, question, settings)
    except QueueFull as exc:
        _err(str(exc))
        return 1
    where = f"position {queued.position}" if queued.position is not None else "waiting for your other questions"
    _err(f"queued as {queued.job.id} ({where})")
    return follow(redis, queued.job.id, user, poll)


def follow(redis: Redis, job_id: str, user: str, poll: float) -> int:
    shown = 0
    try:
        while True:
            job = fetch(redis, job_id)
            meta = job.get_meta(refresh=True)
            progress = meta.get("progress", [])
            for line in progress[shown:]:
                print(line, file=sys.stderr, flush=True)
            shown = max(shown, len(progress))
            final = meta.get("final")
            if final:
                print(final["text"], flush=True)
                footer = " · ".join(str(final[k]) for k in ("repo", "agent", "model") if final.get(k))
                _err(f"{final['kind']}" + (f" ({footer})" if footer else ""))
                return 0 if final["kind"] == "answer" else 1
            time.sleep(poll)
    except KeyboardInterrupt:
        _err(f"cancelling {job_id}: {cancel(redis, job_id, by=user)}")
        return 130
