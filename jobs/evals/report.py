"""An evaluation's report: one record per question, the totals, and the Markdown table.

The JSON file (``Report``) is what ``askbox eval compare`` reads back, so its shape is
the models below; ``version`` changes when it does.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel, Field

from jobs.evals.judge import CRITERIA

VERSION = 1


class Scored(BaseModel):
    """The judge's scores of one answer, 0-10 each, and their mean."""

    scores: dict[str, int]
    overall: float
    rationale: str = ""


class Record(BaseModel):
    """One question as it went: how it ended, how long it took, what it used and cited,
    and (with a judge and a reference) its scores."""

    line: int
    question: str
    reference: str | None = None
    repo: str | None = None  # the repository answered from (or the one asked for, when it never got that far)
    verdict: str | None = None  # from a feedback export
    previous: str | None = None  # the answer voted down (a feedback export)
    run_id: str = ""
    outcome: str  # the final's kind: "answer", or how it failed ("rejected", "timeout", "agent_error", ...)
    answer: str = ""  # the final's text: the answer, or what happened
    seconds: float | None = None  # from sending the question to its final
    waited: float | None = None  # of which in the queue, before a worker took it
    commit: str | None = None
    agent: str | None = None
    model: str | None = None
    cached: bool = False
    tokens: int | None = None  # the agent's, metered by the gateway (None: no gateway fronted it)
    cost_usd: float | None = None
    references: int | None = None  # found in the answer (None: not checked, the repository has no web host)
    linked: int | None = None  # of which verified and linked
    judged: Scored | None = None
    judge_note: str | None = None  # why there are no scores
    judge_tokens: int = 0
    judge_cost_usd: float = 0.0

    @property
    def answered(self) -> bool:
        return self.outcome == "answer"

    @property
    def unverifiable(self) -> int | None:
        return None if self.references is None or self.linked is None else self.references - self.linked


class RunInfo(BaseModel):
    """How the evaluation was run."""

    questions_file: str
    started_at: str
    mode: str  # "queue" or "inline"
    repo: str | None = None
    agent: str | None = None
    model: str | None = None
    judge: str | None = None
    concurrency: int = 1
    seconds: float = 0.0  # the whole run


class Totals(BaseModel):
    questions: int
    answered: int
    failed: dict[str, int]  # kind -> count
    skipped_lines: int
    seconds_p50: float | None
    seconds_p95: float | None
    seconds_max: float | None
    tokens: int
    cost_usd: float
    references: int
    linked: int
    unverifiable: int
    judged: int
    scores: dict[str, float]  # criterion (and "overall") -> mean over the judged answers
    judge_tokens: int
    judge_cost_usd: float


class Skip(BaseModel):
    line: int
    error: str


class Report(BaseModel):
    version: int = VERSION
    run: RunInfo
    records: list[Record]
    skipped: list[Skip] = Field(default_factory=list)
    totals: Totals


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * (len(ordered) - 1))))]


def totals(records: Sequence[Record], skipped: int = 0) -> Totals:
    seconds = [r.seconds for r in records if r.seconds is not None]
    judged = [r.judged for r in records if r.judged is not None]
    scores = {c: round(statistics.fmean(j.scores[c] for j in judged), 2) for c in CRITERIA} if judged else {}
    if judged:
        scores["overall"] = round(statistics.fmean(j.overall for j in judged), 2)
    return Totals(
        questions=len(records),
        answered=sum(r.answered for r in records),
        failed=dict(Counter(r.outcome for r in records if not r.answered)),
        skipped_lines=skipped,
        seconds_p50=percentile(seconds, 0.5),
        seconds_p95=percentile(seconds, 0.95),
        seconds_max=max(seconds, default=None),
        tokens=sum(r.tokens or 0 for r in records),
        cost_usd=round(sum(r.cost_usd or 0 for r in records), 6),
        references=sum(r.references or 0 for r in records),
        linked=sum(r.linked or 0 for r in records),
        unverifiable=sum(r.unverifiable or 0 for r in records),
        judged=len(judged),
        scores=scores,
        judge_tokens=sum(r.judge_tokens for r in records),
        judge_cost_usd=round(sum(r.judge_cost_usd for r in records), 6),
    )


def markdown(report: Report) -> str:
    """The per-question table and the totals, in Markdown."""
    run, t = report.run, report.totals
    lines = [
        f"# askbox eval: {run.questions_file}",
        "",
        f"{run.started_at} · {run.mode} · repo {run.repo or '(default)'} · agent {run.agent or '(default)'}"
        f"{f' / {run.model}' if run.model else ''} · judge {run.judge or 'none'} · concurrency {run.concurrency}"
        f" · {run.seconds:.1f} s",
        "",
        "| line | question | outcome | time | tokens | cost | references linked / found (unverifiable) | score |",
        "| ---: | --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in report.records:
        lines.append(
            f"| {r.line} | {_cell(r.question, 70)} | {r.outcome}{' (cached)' if r.cached else ''} | "
            f"{_seconds(r.seconds)} | {_tokens(r.tokens)} | {_usd(r.cost_usd)} | {_refs(r)} | "
            f"{_score(r)} |"
        )
    failed = ", ".join(f"{kind} {n}" for kind, n in sorted(t.failed.items())) or "none"
    lines += [
        "",
        "| total | |",
        "| --- | --- |",
        f"| answered | {t.answered} / {t.questions} (failed: {failed}) |",
        f"| time to answer | p50 {_seconds(t.seconds_p50)} · p95 {_seconds(t.seconds_p95)} · "
        f"max {_seconds(t.seconds_max)} |",
        f"| tokens, cost (agents) | {t.tokens:,} · {_usd(t.cost_usd)} |",
        f"| references | {t.linked} linked of {t.references} found, {t.unverifiable} unverifiable |",
    ]
    if run.judge:
        means = " · ".join(f"{c} {t.scores[c]:.1f}" for c in (*CRITERIA, "overall") if c in t.scores)
        lines += [
            f"| scores ({t.judged} judged) | {means or '-'} |",
            f"| tokens, cost (judge) | {t.judge_tokens:,} · {_usd(t.judge_cost_usd)} |",
        ]
    if report.skipped:
        lines += ["", f"Skipped lines: {', '.join(str(s.line) for s in report.skipped)} (malformed)."]
    return "\n".join(lines) + "\n"


def _cell(text: str, limit: int) -> str:
    one = " ".join(text.split()).replace("|", "\\|")
    return one if len(one) <= limit else one[: limit - 1] + "…"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _tokens(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def _refs(record: Record) -> str:
    if record.references is None:
        return "-"
    return f"{record.linked} / {record.references} ({record.unverifiable})"


def _score(record: Record) -> str:
    return f"{record.judged.overall:.1f}" if record.judged else "-"
