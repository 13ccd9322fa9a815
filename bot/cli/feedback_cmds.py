"""``askbox feedback export --since 7d``: the verdicts on answers as JSONL (jobs/feedback.py),
one line per person and answer: question, answer, verdict, repo, agent, model, commit."""

from __future__ import annotations

import argparse
import re
import sys
import time

from bot.cli.output import err
from jobs.settings import Settings

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def seconds(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if not match:
        raise ValueError(f"--since takes a duration like 7d, 12h or 30m (got {text!r})")
    return int(match[1]) * UNITS[match[2]]


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from jobs import feedback

    try:
        since = time.time() - seconds(args.since)
    except ValueError as exc:
        err(str(exc))
        return 2
    count = 0
    for line in feedback.as_jsonl(feedback.export(settings.redis.client(), since)):
        print(line)
        count += 1
    err(f"{count} verdict{'s' if count != 1 else ''} since {args.since} ago")
    sys.stdout.flush()
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("feedback", help="the verdicts users gave answers")
    commands = group.add_subparsers(dest="feedback_command", required=True)
    p = commands.add_parser("export", help="JSONL of question, answer and verdict (the start of an evaluation set)")
    p.add_argument("--since", default="7d", help="how far back: 30m, 12h, 7d, 2w (default 7d)")
    p.set_defaults(func=cmd_export)
