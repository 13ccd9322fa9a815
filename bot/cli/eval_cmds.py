"""``askbox eval QUESTIONS.jsonl``: every question through the real pipeline (the queue,
or ``--inline``), measured and optionally judged, into a JSON report, a Markdown table
and an HTML page; ``askbox eval compare A.json B.json``: two reports side by side.

Thin over jobs/evals/. Exit status: 0 when every line was asked (answered or not: a
failed answer is a result), 1 when a line was malformed (each named on stderr, the rest
still ran), 2 for a file or report it cannot read, 3 with no worker for the queue, 130
when stopped (Ctrl-C, SIGTERM: what was in flight is cancelled, the report still written).
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bot.cli.ask_cmds import EXIT_NO_WORKER
from bot.cli.output import err
from jobs.settings import Settings
from sandbox.agents.settings import AGENT_NAMES


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    if args.questions == "compare":
        if len(args.more) != 2:
            err("eval compare: give two reports: askbox eval compare A.json B.json")
            return 2
        return compare_reports(Path(args.more[0]), Path(args.more[1]))
    if args.more:
        err(f"eval: one questions file, not {len(args.more) + 1} (or: askbox eval compare A.json B.json)")
        return 2
    return run_eval(args, settings)


def run_eval(args: argparse.Namespace, settings: Settings) -> int:
    from rq import Worker

    from bot.cli.signals import cancel_on_termination
    from jobs.evals import save
    from jobs.evals.harness import Harness, Options
    from jobs.evals.questions import read_questions
    from jobs.evals.report import Record, Report, RunInfo, Skip, markdown, totals

    path = Path(args.questions)
    try:
        questions, skipped = read_questions(path)
    except OSError as exc:
        err(f"eval: cannot read {path}: {exc.strerror or exc}")
        return 2
    for line in skipped:
        err(f"eval: {line.message(path)}; skipped")
    if not questions:
        err(f"eval: {path} has no question to ask")
        return 2
    redis = settings.redis.client()
    redis.ping()  # no Redis: one line (bot/cli), not one failed record per question
    if not args.inline and not Worker.all(connection=redis):
        err("eval: no worker is running: start one with `askbox worker`, or run here with --inline")
        return EXIT_NO_WORKER
    cancel_on_termination()  # SIGTERM/SIGHUP stop the run as Ctrl-C does
    options = Options(
        repo=args.repo,
        agent=args.agent,
        model=args.model,
        judge=args.judge,
        concurrency=args.concurrency,
        inline=args.inline,
        user=getpass.getuser(),
    )
    count = len(questions)
    done = 0

    def progress(record: Record) -> None:
        nonlocal done
        done += 1
        parts = [f"{record.outcome} in {record.seconds:.1f} s" if record.seconds is not None else record.outcome]
        if record.references is not None:
            parts.append(f"{record.linked}/{record.references} references linked")
        if record.judged:
            parts.append(f"score {record.judged.overall:.1f}")
        print(f"[{done}/{count}] line {record.line}: " + " · ".join(parts), file=sys.stderr, flush=True)

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    harness = Harness(settings, redis, options, on_record=progress)
    records = harness.run(questions)
    info = RunInfo(
        questions_file=str(path),
        started_at=started_at,
        mode="inline" if args.inline else "queue",
        repo=args.repo,
        agent=args.agent,
        model=args.model,
        judge=args.judge,
        concurrency=args.concurrency,
        seconds=round(time.monotonic() - started, 2),
    )
    report = Report(
        run=info,
        records=records,
        skipped=[Skip(line=s.line, error=s.error) for s in skipped],
        totals=totals(records, len(skipped)),
    )
    out = Path(args.out or f"askbox-eval-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    written = save(report, out)
    print(markdown(report), end="", flush=True)
    err(f"eval: report in {', '.join(str(p) for p in written)}")
    if harness.stopped:
        err(f"eval: stopped after {len(records)} of {count} questions")
        return 130
    return 1 if skipped else 0


def compare_reports(a: Path, b: Path) -> int:
    from jobs.evals.compare import BadReport, compare, load

    try:
        first, second = load(a), load(b)
    except BadReport as exc:
        err(f"eval compare: {exc}")
        return 2
    print(
        compare(first, second, a.name if a.name != b.name else str(a), b.name if a.name != b.name else str(b)),
        end="",
        flush=True,
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "eval",
        help="measure answers: a JSONL file of questions through the pipeline, reported (and compared)",
        description="askbox eval QUESTIONS.jsonl [options]   |   askbox eval compare A.json B.json",
    )
    evaluate.add_argument(
        "questions",
        metavar="QUESTIONS.jsonl",
        help='one {"question": ..., "answer": <reference, optional>, "repo": <optional>} a line; '
        "or `compare` and two reports",
    )
    evaluate.add_argument("more", nargs="*", help=argparse.SUPPRESS)
    evaluate.add_argument(
        "--repo", help="a name from ASKBOX_REPOS (a line's own repo comes first; default: the queue's)"
    )
    evaluate.add_argument("--agent", choices=list(AGENT_NAMES), help="default: ASKBOX_AGENT")
    evaluate.add_argument("--model", help="the agent's model (default: its own)")
    evaluate.add_argument(
        "--judge",
        metavar="MODEL",
        help="score each answer against its reference with this model (on ASKBOX_SIDE_PROVIDER)",
    )
    evaluate.add_argument("--concurrency", type=_positive, default=1, help="questions in flight at once (default 1)")
    evaluate.add_argument("--inline", action="store_true", help="run the pipeline in this process, without the queue")
    evaluate.add_argument("--out", help="the report's directory (default: ./askbox-eval-<UTC time>)")
    evaluate.set_defaults(func=cmd_eval)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
