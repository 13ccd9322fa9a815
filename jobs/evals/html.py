"""An evaluation's report as one self-contained HTML page: the distributions of time,
cost and score as charts, the outcomes, the mean score per criterion, then every question.

No script, no stylesheet or font from elsewhere, no network: inline CSS and SVG drawn
here. By hand because what is drawn is a few histograms and bars: a plotting library
(matplotlib and numpy, tens of MB; the JS ones from a CDN) would outweigh the page, and a
report must open on a machine without a network. Every text from a question, an answer
or a judge is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

from jobs.evals.judge import CRITERIA
from jobs.evals.report import Record, Report

WIDTH, HEIGHT = 420, 200  # one chart
PAD_LEFT, PAD_BOTTOM, PAD_TOP = 36, 34, 16
BLUE, GREEN, RED, GREY = "#3b6fd8", "#2e9e5b", "#d2493b", "#8a8f98"

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #1d2330; padding: 0 1rem; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; } .sub { color: #5b6270; margin-top: 0; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; margin: 1.2rem 0; }
.card { border: 1px solid #e1e4ea; border-radius: 8px; padding: .7rem 1rem; min-width: 150px; }
.card b { display: block; font-size: 1.5rem; } .card span { color: #5b6270; font-size: .85rem; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 1rem; }
figure { margin: 0; border: 1px solid #e1e4ea; border-radius: 8px; padding: .6rem; }
figcaption { font-weight: 600; margin-bottom: .3rem; } figcaption small { font-weight: 400; color: #5b6270; }
svg text { font: 11px system-ui, sans-serif; fill: #5b6270; }
table { border-collapse: collapse; width: 100%; margin-top: 1.5rem; font-size: .9rem; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #eceef2; vertical-align: top; }
td.n { text-align: right; white-space: nowrap; } .answer { color: #2e9e5b; } .failed { color: #d2493b; }
details pre { white-space: pre-wrap; background: #f6f7f9; padding: .5rem; border-radius: 6px; max-height: 24rem;
              overflow: auto; }
.empty { color: #8a8f98; font-style: italic; padding: 2rem 0; text-align: center; }
"""


def render(report: Report) -> str:
    run, totals, records = report.run, report.totals, report.records
    answered = [r for r in records if r.answered]
    seconds = [r.seconds for r in records if r.seconds is not None]
    costs = [r.cost_usd for r in records if r.cost_usd is not None]
    overall = [r.judged.overall for r in records if r.judged]
    cards = [
        (f"{totals.answered} / {totals.questions}", "answered"),
        (_s(totals.seconds_p50), "time to answer, p50"),
        (_s(totals.seconds_p95), "time to answer, p95"),
        (f"${totals.cost_usd:.4f}", f"cost of the agents ({totals.tokens:,} tokens)"),
        (f"{totals.linked} / {totals.references}", f"references linked ({totals.unverifiable} unverifiable)"),
    ]
    if run.judge:
        cards.append(
            (
                f"{totals.scores['overall']:.1f}" if "overall" in totals.scores else "-",
                f"mean score ({totals.judged} judged)",
            )
        )
    charts = [
        _figure("Time to answer", f"{len(seconds)} questions", histogram(seconds, _s, BLUE)),
        _figure(
            "Cost per question", f"{len(costs)} metered by the gateway", histogram(costs, lambda v: f"${v:.4f}", GREEN)
        ),
        _figure("Outcomes", f"{len(records)} questions", bars(_outcomes(records), lambda n: str(int(n)))),
    ]
    if run.judge:
        charts += [
            _figure(
                "Score (mean of the five criteria)",
                f"{len(overall)} judged",
                histogram(overall, lambda v: f"{v:g}", BLUE, low=0.0, high=10.0, bins=10),
            ),
            _figure(
                "Mean score per criterion",
                "0-10",
                bars([(c, totals.scores.get(c, 0.0), BLUE) for c in CRITERIA], lambda v: f"{v:.1f}", top=10.0),
            ),
        ]
    skipped = "".join(f"<li>line {s.line}: {escape(s.error)}</li>" for s in report.skipped)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>askbox eval: {escape(run.questions_file)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body>
<h1>askbox eval: {escape(run.questions_file)}</h1>
<p class="sub">{escape(run.started_at)} · {escape(run.mode)} · repo {escape(run.repo or "(default)")} ·
agent {escape(run.agent or "(default)")}{escape(f" / {run.model}" if run.model else "")} ·
judge {escape(run.judge or "none")} · concurrency {run.concurrency} · {run.seconds:.1f} s ·
{len(answered)} answered</p>
<div class="cards">{"".join(f"<div class='card'><b>{escape(v)}</b><span>{escape(k)}</span></div>" for v, k in cards)}</div>
<div class="charts">{"".join(charts)}</div>
{f"<p>Skipped lines (malformed):</p><ul>{skipped}</ul>" if skipped else ""}
{_table(records, bool(run.judge))}
</body></html>
"""


def histogram(
    values: Sequence[float],
    label: Callable[[float], str],
    color: str,
    low: float | None = None,
    high: float | None = None,
    bins: int | None = None,
) -> str:
    """Counts of ``values`` in equal bins between ``low`` and ``high`` (their range by default)."""
    if not values:
        return _empty("no values")
    low = min(values) if low is None else low
    high = max(values) if high is None else high
    bins = bins or max(1, min(12, math.ceil(math.sqrt(len(values))) + 1))
    width = (high - low) / bins or 1.0
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, max(0, int((value - low) / width)))] += 1
    plot_w, plot_h = WIDTH - PAD_LEFT - 8, HEIGHT - PAD_BOTTOM - PAD_TOP
    peak = max(counts)
    bar_w = plot_w / bins
    parts = [_axes(peak)]
    for i, count in enumerate(counts):
        x = PAD_LEFT + i * bar_w
        h = plot_h * count / peak
        y = PAD_TOP + plot_h - h
        tip = f"{label(low + i * width)} – {label(low + (i + 1) * width)}: {count}"
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" height="{h:.1f}" '
            f'fill="{color}" rx="2"><title>{escape(tip)}</title></rect>'
        )
        if count:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle">{count}</text>')
    for i in sorted({0, bins // 2, bins}):
        x = PAD_LEFT + i * bar_w
        anchor = "start" if i == 0 else "end" if i == bins else "middle"  # the ends stay inside the chart
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - PAD_BOTTOM + 14}" text-anchor="{anchor}">'
            f"{escape(label(low + i * width))}</text>"
        )
    return _svg(parts)


def bars(items: Sequence[tuple[str, float, str]], label: Callable[[float], str], top: float | None = None) -> str:
    """One bar per (name, value, colour)."""
    if not items:
        return _empty("nothing to show")
    peak = top or max((v for _, v, _ in items), default=0) or 1.0
    plot_w, plot_h = WIDTH - PAD_LEFT - 8, HEIGHT - PAD_BOTTOM - PAD_TOP
    bar_w = plot_w / len(items)
    parts = [_axes(peak, label)]
    for i, (name, value, color) in enumerate(items):
        x = PAD_LEFT + i * bar_w
        h = plot_h * value / peak
        y = PAD_TOP + plot_h - h
        parts.append(
            f'<rect x="{x + 4:.1f}" y="{y:.1f}" width="{max(bar_w - 8, 1):.1f}" height="{h:.1f}" '
            f'fill="{color}" rx="2"><title>{escape(f"{name}: {label(value)}")}</title></rect>'
        )
        parts.append(
            f'<text x="{x + bar_w / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle">{escape(label(value))}</text>'
        )
        parts.append(
            f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - PAD_BOTTOM + 14}" text-anchor="middle">{escape(name)}</text>'
        )
    return _svg(parts)


def _axes(peak: float, label: Callable[[float], str] = lambda v: f"{v:g}") -> str:
    base = HEIGHT - PAD_BOTTOM
    return (
        f'<line x1="{PAD_LEFT}" y1="{base}" x2="{WIDTH - 8}" y2="{base}" stroke="#c9cdd6"/>'
        f'<text x="{PAD_LEFT - 6}" y="{PAD_TOP + 4}" text-anchor="end">{escape(label(peak))}</text>'
        f'<text x="{PAD_LEFT - 6}" y="{base}" text-anchor="end">0</text>'
    )


def _svg(parts: list[str]) -> str:
    return f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img">' + "".join(parts) + "</svg>"


def _empty(why: str) -> str:
    return f'<div class="empty">{escape(why)}</div>'


def _figure(title: str, note: str, chart: str) -> str:
    return f"<figure><figcaption>{escape(title)} <small>{escape(note)}</small></figcaption>{chart}</figure>"


def _outcomes(records: Sequence[Record]) -> list[tuple[str, float, str]]:
    counts: dict[str, int] = {}
    for record in records:
        counts[record.outcome] = counts.get(record.outcome, 0) + 1
    order = sorted(counts, key=lambda kind: (kind != "answer", kind))
    return [(kind, float(counts[kind]), GREEN if kind == "answer" else RED) for kind in order]


def _table(records: Sequence[Record], judged: bool) -> str:
    head = (
        "<tr><th>line</th><th>question</th><th>outcome</th><th>time</th><th>tokens</th><th>cost</th>"
        "<th>references linked / found</th>" + ("<th>score</th>" if judged else "") + "</tr>"
    )
    rows = []
    for r in records:
        refs = "-" if r.references is None else f"{r.linked} / {r.references}"
        score = f"{r.judged.overall:.1f}" if r.judged else escape(r.judge_note or "-")
        details = [("Answer" if r.answered else "What happened", r.answer)]
        if r.reference:
            details.append(("Reference", r.reference))
        if r.previous:
            details.append((f"Earlier answer (voted {r.verdict})", r.previous))
        if r.judged:
            scores = ", ".join(f"{c} {v}" for c, v in r.judged.scores.items())
            details.append(("Judge", f"{scores}\n{r.judged.rationale}"))
        body = "".join(f"<p><b>{escape(title)}</b></p><pre>{escape(text)}</pre>" for title, text in details)
        rows.append(
            f"<tr><td class='n'>{r.line}</td><td><details><summary>{escape(_short(r.question))}</summary>{body}"
            f"</details></td><td class='{'answer' if r.answered else 'failed'}'>{escape(r.outcome)}"
            f"{' (cached)' if r.cached else ''}</td><td class='n'>{_s(r.seconds)}</td>"
            f"<td class='n'>{'-' if r.tokens is None else f'{r.tokens:,}'}</td>"
            f"<td class='n'>{'-' if r.cost_usd is None else f'${r.cost_usd:.4f}'}</td><td class='n'>{refs}</td>"
            + (f"<td class='n'>{score}</td>" if judged else "")
            + "</tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _short(text: str, limit: int = 140) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"
