"""``askbox eval compare A.json B.json``: two evaluations of the same questions side by
side (a prompt, model or agent change judged), per question and in total, in Markdown.

Questions are matched by their text and repository (the line numbers of two files may
differ); one found in only one report is listed as such. A difference is B minus A.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from jobs.evals.judge import CRITERIA
from jobs.evals.report import VERSION, Record, Report


class BadReport(ValueError):
    """Not a report ``askbox eval`` wrote (or of another version); the message names the file."""


def load(path: Path) -> Report:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadReport(f"{path}: {exc.strerror or exc}") from None
    try:
        report = Report.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        raise BadReport(f"{path}: not an askbox eval report ({where}: {first['msg']})") from None
    if report.version != VERSION:
        raise BadReport(f"{path}: report version {report.version}; this askbox reads version {VERSION}")
    return report


def compare(a: Report, b: Report, a_name: str = "A", b_name: str = "B") -> str:
    by_key = {_key(r): r for r in b.records}
    matched = [(r, by_key.pop(_key(r))) for r in a.records if _key(r) in by_key]
    only_a = [r for r in a.records if _key(r) not in {_key(x) for x, _ in matched}]
    only_b = list(by_key.values())
    lines = [
        f"# askbox eval compare: {a_name} → {b_name}",
        "",
        f"- {a_name}: {a.run.questions_file}, {a.run.started_at}, {_setup(a)}",
        f"- {b_name}: {b.run.questions_file}, {b.run.started_at}, {_setup(b)}",
        "",
        "| question | outcome | time | cost | linked (unverifiable) | score |",
        "| --- | --- | ---: | ---: | --- | ---: |",
    ]
    for ra, rb in matched:
        outcome = ra.outcome if ra.outcome == rb.outcome else f"{ra.outcome} → **{rb.outcome}**"
        lines.append(
            f"| {_cell(ra.question)} | {outcome} | {_delta(ra.seconds, rb.seconds, ' s', 1)} | "
            f"{_delta(ra.cost_usd, rb.cost_usd, '', 4, prefix='$')} | {_refs(ra)} → {_refs(rb)} | "
            f"{_delta(_overall(ra), _overall(rb), '', 1)} |"
        )
    ta, tb = a.totals, b.totals
    lines += [
        "",
        f"| total | {a_name} | {b_name} | difference |",
        "| --- | ---: | ---: | ---: |",
        _row("answered", ta.answered, tb.answered, 0),
        _row("failed", ta.questions - ta.answered, tb.questions - tb.answered, 0),
        _row("time to answer, p50 (s)", ta.seconds_p50, tb.seconds_p50, 1),
        _row("time to answer, p95 (s)", ta.seconds_p95, tb.seconds_p95, 1),
        _row("tokens (agents)", ta.tokens, tb.tokens, 0),
        _row("cost (agents, $)", ta.cost_usd, tb.cost_usd, 4),
        _row("references linked", ta.linked, tb.linked, 0),
        _row("references unverifiable", ta.unverifiable, tb.unverifiable, 0),
    ]
    for criterion in (*CRITERIA, "overall"):
        if criterion in ta.scores or criterion in tb.scores:
            lines.append(_row(f"score: {criterion}", ta.scores.get(criterion), tb.scores.get(criterion), 2))
    for name, only in ((a_name, only_a), (b_name, only_b)):
        if only:
            lines += ["", f"Only in {name}: " + "; ".join(f"line {r.line} ({_cell(r.question, 50)})" for r in only)]
    return "\n".join(lines) + "\n"


def _key(record: Record) -> tuple[str, str | None]:
    return " ".join(record.question.split()), record.repo


def _setup(report: Report) -> str:
    run = report.run
    who = "/".join(p for p in (run.agent, run.model) if p) or "default agent"
    return f"{run.mode}, {who}, judge {run.judge or 'none'}"


def _overall(record: Record) -> float | None:
    return record.judged.overall if record.judged else None


def _refs(record: Record) -> str:
    return "-" if record.references is None else f"{record.linked} ({record.unverifiable})"


def _delta(a: float | None, b: float | None, unit: str, digits: int, prefix: str = "") -> str:
    if a is None and b is None:
        return "-"
    if a is None or b is None:
        return f"{_num(a, digits, prefix)} → {_num(b, digits, prefix)}"
    return f"{_num(a, digits, prefix)} → {_num(b, digits, prefix)} ({b - a:+.{digits}f}{unit})"


def _row(name: str, a: float | None, b: float | None, digits: int) -> str:
    difference = "-" if a is None or b is None else f"{b - a:+,.{digits}f}"
    return f"| {name} | {_num(a, digits)} | {_num(b, digits)} | {difference} |"


def _num(value: float | None, digits: int, prefix: str = "") -> str:
    return "-" if value is None else f"{prefix}{value:,.{digits}f}"


def _cell(text: str, limit: int = 60) -> str:
    one = " ".join(text.split()).replace("|", "\\|")
    return one if len(one) <= limit else one[: limit - 1] + "…"
