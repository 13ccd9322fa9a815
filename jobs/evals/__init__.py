"""``askbox eval``: a file of questions through the real pipeline, measured, optionally
judged, reported (JSON, Markdown, one HTML page), and two reports compared.

- jobs/evals/questions.py: the JSONL lines (benchmarks' shape, ``askbox feedback export``'s);
- jobs/evals/harness.py: each question through the queue or inline, then judged;
- jobs/evals/judge.py: the LLM-as-judge, a structured call through the gateway;
- jobs/evals/report.py: the records, totals and Markdown; jobs/evals/html.py: the page;
- jobs/evals/compare.py: two reports side by side.
"""

from __future__ import annotations

from pathlib import Path

from jobs.evals import html
from jobs.evals.report import Report, markdown

FILES = ("report.json", "report.md", "report.html")


def save(report: Report, directory: Path) -> list[Path]:
    """The report's three files in ``directory`` (made if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    texts = (report.model_dump_json(indent=2), markdown(report), html.render(report))
    written = []
    for name, text in zip(FILES, texts, strict=True):
        path = directory / name
        path.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
        written.append(path)
    return written
