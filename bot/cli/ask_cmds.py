"""``askbox ask``: one question, answered in this process (``--inline``) or through the queue.

``--inline`` runs the worker's own pipeline (jobs/pipeline/) with the terminal as its
destination; through the queue, this process only enqueues and follows the job's
progress meta.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
import uuid
from pathlib import Path

from bot.cli.output import err
from jobs.settings import Settings
from sandbox.agents.settings import AGENT_NAMES

EXIT_NO_WORKER = 3


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    try:
        args.question = question_text(args)
    except QuestionRefused as exc:
        err(f"ask: {exc}")
        return 2
    if args.explain:
        return explain(args, settings)
    return ask_inline(args, settings) if args.inline else ask_through_queue(args, settings)


class QuestionRefused(ValueError):
    """The question cannot be read, or is too long; the message never repeats it."""


def question_text(args: argparse.Namespace) -> str:
    """The question: the argument, standard input (``-``) or a file (``--file``). A long
    question belongs in a file or on stdin: an argument is bounded by the system's
    ARG_MAX and shows in ``ps``."""
    from jobs.question import MAX_QUESTION_CHARS

    if args.file is not None and args.question not in (None, "-"):
        raise QuestionRefused("give the question as an argument or with --file, not both")
    try:
        if args.file is not None:
            text = Path(args.file).read_text(encoding="utf-8", errors="replace")
        elif args.question in (None, "-"):
            if args.question is None and sys.stdin.isatty():
                raise QuestionRefused("no question: give it as an argument, `-` to read it from stdin, or --file PATH")
            text = sys.stdin.read()
        else:
            text = args.question
    except OSError as exc:
        raise QuestionRefused(f"cannot read the question: {exc}") from None
    text = text.strip()
    if not text:
        raise QuestionRefused("the question is empty")
    # The queue's limit (jobs/question.py); --inline is bounded by the prompt's 1 MiB instead.
    if not args.inline and not args.explain and len(text) > MAX_QUESTION_CHARS:
        raise QuestionRefused(
            f"the question is {len(text):,} characters; a queued question may have at most "
            f"{MAX_QUESTION_CHARS:,} (with --inline: up to the prompt's 1 MiB)"
        )
    return text


def explain(args: argparse.Namespace, settings: Settings) -> int:
    """Print the prompt the agent would get for this question (with ``--channel``: asked in
    that Slack channel), pinned to the commit it would read; nothing runs."""
    from jobs.agent_runs import pin_repo
    from jobs.prompt import build_prompt, setting_for
    from jobs.repos import RepoUnavailable, UnknownRepo, resolve_repo

    try:
        repo = resolve_repo(args.repo or ".", settings.jobs.repos, allow_paths=True)
        pinned = pin_repo(settings, repo)
    except (UnknownRepo, RepoUnavailable) as exc:
        err(f"ask: {exc}")
        return 2
    setting = setting_for(
        settings.jobs, repo.name, pinned.commit, args.channel, "slack" if args.channel else "terminal"
    )
    print(build_prompt(args.question, setting), flush=True)
    return 0


def ask_inline(args: argparse.Namespace, settings: Settings) -> int:
    """The question through the worker's pipeline (jobs/pipeline/), in this process: the
    same access, pin, triage, cache, memory (``--thread``), budget, agent and citations;
    only the destination differs (the terminal, bot/cli/terminal.py)."""
    from bot.cli.signals import cancel_on_termination
    from bot.cli.terminal import Terminal
    from jobs.pipeline import Run, answer
    from jobs.question import Origin, Question

    cancel_on_termination()  # SIGTERM/SIGHUP cancel the agent's sandbox, as Ctrl-C does
    question = Question(
        origin=Origin(kind="terminal", user=getpass.getuser(), session=args.thread),
        text=args.question,
        repo=args.repo or ".",
        agent=args.agent,
        model=args.model,
        fresh=args.fresh,
    )
    terminal = Terminal(as_json=args.json)
    run = Run(
        question,
        settings,
        settings.redis.client(),
        terminal,
        run_id=f"cli-{uuid.uuid4().hex[:12]}",
        allow_paths=True,  # the operator's own process: any directory they can read
        labels={"user": question.origin.user},
        one_off=True,
    )
    try:
        answer(run)
    except KeyboardInterrupt:
        err("cancelled")
        return 130
    return terminal.exit_code


def ask_through_queue(args: argparse.Namespace, settings: Settings, poll: float = 0.3) -> int:
    from rq import Worker

    from jobs.question import Origin, Question
    from jobs.queue import QueueFull, enqueue, where

    redis = settings.redis.client()
    if not Worker.all(connection=redis):
        err(
            "no worker is running, so the question would wait: start one (`askbox worker`; under compose "
            "`docker compose up -d worker`, and `docker compose logs worker` says why it stopped), or answer "
            "here with --inline"
        )
        return EXIT_NO_WORKER
    repos = settings.jobs.repos
    repo = args.repo
    if repo is None and not repos:
        repo = "."
    if repo is not None and repo not in repos and Path(repo).is_dir():
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
        queued = enqueue(redis, question, settings.jobs)
    except QueueFull as exc:
        err(str(exc))
        return 1
    err(f"queued as {queued.job.id} ({where(redis, queued)})")
    return follow(redis, queued.job.id, user, settings, poll)


def follow(redis, job_id: str, user: str, settings: Settings, poll: float) -> int:
    """Print the job's progress lines as they come, then its final message."""
    from jobs.cancel import cancel
    from jobs.queue import fetch

    shown = 0
    try:
        while True:
            meta = fetch(redis, job_id).get_meta(refresh=True)
            progress = meta.get("progress", [])
            for line in progress[shown:]:
                print(line, file=sys.stderr, flush=True)
            shown = max(shown, len(progress))
            final = meta.get("final")
            if final:
                if final.get("summary"):
                    print(f"In short: {final['summary']}\n", flush=True)
                print(final["text"], flush=True)
                footer = " · ".join(str(final[k]) for k in ("repo", "agent", "model") if final.get(k))
                err(f"{final['kind']}" + (f" ({footer})" if footer else ""))
                return 0 if final["kind"] == "answer" else 1
            time.sleep(poll)
    except KeyboardInterrupt:
        err(f"cancelling {job_id}: {cancel(redis, job_id, by=user, slack=settings.slack)}")
        return 130


def add_commands(sub: argparse._SubParsersAction) -> None:
    ask = sub.add_parser("ask", help="ask a question about a repository")
    ask.add_argument("question", nargs="?", help="the question; `-` (or nothing, piped) reads it from stdin")
    ask.add_argument("--file", help="read the question from this file (for long questions)")
    ask.add_argument(
        "--repo",
        help="a name from ASKBOX_REPOS, or a directory (with --inline; queued only where the "
        "worker has ASKBOX_ALLOW_REPO_PATHS=true). Default: with --inline this "
        "directory, else the worker's only repository",
    )
    ask.add_argument(
        "--agent",
        choices=list(AGENT_NAMES),
        help="default: the worker's (its ASKBOX_AGENT; unset: cursor where it can run, else gemini); "
        "with --inline, this process's",
    )
    ask.add_argument("--model", help="default: ASKBOX_AGENT_MODEL, else the agent's own default")
    ask.add_argument("--inline", action="store_true", help="run in this process, without the queue")
    ask.add_argument("--json", action="store_true", help="print the normalized events as NDJSON")
    ask.add_argument("--thread", help="a conversation name: later questions with it see the earlier ones")
    ask.add_argument("--fresh", action="store_true", help="do not answer from the cache")
    ask.add_argument("--priority", choices=["high", "default", "low"], default="default")
    ask.add_argument("--explain", action="store_true", help="print the prompt the agent would get; run nothing")
    ask.add_argument("--channel", help="with --explain: as asked in this Slack channel (its instructions)")
    ask.set_defaults(func=cmd_ask)
