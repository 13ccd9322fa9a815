"""``askbox eval``'s parts that need no service: reading the questions (every malformed
shape named by its line), the totals, the Markdown table, the HTML page (self-contained,
escaped) and the comparison of two reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from jobs.evals import save
from jobs.evals.compare import BadReport, compare, load
from jobs.evals.html import render
from jobs.evals.questions import EvalQuestion, Skipped, parse_line, read_questions
from jobs.evals.report import Record, Report, RunInfo, Scored, Skip, markdown, percentile, totals
from jobs.question import MAX_QUESTION_CHARS

# --------------------------------------------------------------------------- the questions


def test_a_file_of_every_shape(tmp_path: Path) -> None:
    lines = [
        {"question": "Where is JSON serialised?", "answer": "In `provider.py`.", "repo": "flask"},
        {"question": "What does `dumps` return?"},  # no reference
        "this is not json",
        {"question": "Why?", "answer": "Because.", "verdict": "up", "job_id": "x", "model": "m"},  # feedback export
        {"question": "How?", "answer": "A wrong answer.", "verdict": "down", "repo": "web"},
        ["a", "list"],
        {"answer": "no question"},
        {"question": 42},
        {"question": "   "},
        {"question": "Ok?", "verdict": "meh"},
        {"question": "x" * (MAX_QUESTION_CHARS + 1)},
        {"question": "Ok?", "repo": ""},
    ]
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n\n  \n")
    questions, skipped = read_questions(path)
    assert questions == [
        EvalQuestion(1, "Where is JSON serialised?", reference="In `provider.py`.", repo="flask"),
        EvalQuestion(2, "What does `dumps` return?"),
        EvalQuestion(4, "Why?", reference="Because.", verdict="up"),
        # Voted down: not the reference; kept to read beside the new answer.
        EvalQuestion(5, "How?", reference=None, repo="web", verdict="down", previous="A wrong answer."),
    ]
    messages = [s.message(path) for s in skipped]
    assert [s.line for s in skipped] == [3, 6, 7, 8, 9, 10, 11, 12]  # blank lines are nothing
    assert messages[0] == f"{path}:3: not JSON (Expecting value at column 1)"
    assert messages[1] == f"{path}:6: a JSON object is expected, not list"
    assert messages[2] == f'{path}:7: no "question": each line needs {{"question": "…"}}'
    assert messages[3] == f'{path}:8: "question": Input should be a valid string'
    assert messages[4] == f'{path}:9: "question": the question is empty'
    assert messages[5].startswith(f"{path}:10: \"verdict\": Input should be 'up' or 'down'")
    assert messages[6] == f'{path}:11: "question": String should have at most {MAX_QUESTION_CHARS} characters'
    assert messages[7] == f'{path}:12: "repo": String should have at least 1 character'


def test_a_line_of_invalid_utf8_is_read_not_fatal() -> None:
    assert isinstance(parse_line(1, '{"question": "caf\ufffd?"}'), EvalQuestion)
    assert isinstance(parse_line(2, "\x00\x01"), Skipped)


# --------------------------------------------------------------------------- records and totals


def record(
    line: int,
    outcome: str = "answer",
    seconds: float | None = 2.0,
    cost: float | None = 0.001,
    references: int | None = 3,
    linked: int | None = 2,
    overall: int | None = None,
    **more,
) -> Record:
    judged = (
        Scored(
            scores={c: overall for c in ("correctness", "completeness", "relevance", "clarity", "reasoning")},
            overall=float(overall),
            rationale="r",
        )
        if overall is not None
        else None
    )
    return Record(
        line=line,
        question=more.pop("question", f"question {line}?"),
        outcome=outcome,
        answer="text",
        seconds=seconds,
        tokens=None if cost is None else 100,
        cost_usd=cost,
        references=references,
        linked=linked,
        judged=judged,
        judge_tokens=10 if judged else 0,
        judge_cost_usd=0.0001 if judged else 0.0,
        **more,
    )


def report_of(records: list[Record], judge: str | None = "gemini-2.5-flash", skipped: int = 0) -> Report:
    run = RunInfo(
        questions_file="q.jsonl",
        started_at="2026-01-01T00:00:00+00:00",
        mode="queue",
        repo="demo",
        judge=judge,
        concurrency=2,
        seconds=12.5,
    )
    return Report(
        run=run, records=records, skipped=[Skip(line=9, error="not JSON")] * skipped, totals=totals(records, skipped)
    )


def test_totals() -> None:
    records = [
        record(1, seconds=1.0, overall=8),
        record(2, seconds=3.0, overall=6),
        record(3, "rejected", seconds=0.1, cost=None, references=None, linked=None),
        record(4, "timeout", seconds=9.0, cost=0.01, references=0, linked=0),
    ]
    t = totals(records, skipped=1)
    assert (t.questions, t.answered, t.failed, t.skipped_lines) == (4, 2, {"rejected": 1, "timeout": 1}, 1)
    assert (t.seconds_p50, t.seconds_p95, t.seconds_max) == (3.0, 9.0, 9.0)
    assert (t.tokens, t.cost_usd) == (300, 0.012)
    assert (t.references, t.linked, t.unverifiable) == (6, 4, 2)
    assert t.judged == 2 and t.scores == {
        "correctness": 7.0,
        "completeness": 7.0,
        "relevance": 7.0,
        "clarity": 7.0,
        "reasoning": 7.0,
        "overall": 7.0,
    }
    assert (t.judge_tokens, t.judge_cost_usd) == (20, 0.0002)
    assert records[2].unverifiable is None and records[0].unverifiable == 1
    assert percentile([], 0.5) is None and percentile([5.0], 0.95) == 5.0


def test_markdown_has_a_row_per_question_and_the_totals() -> None:
    text = markdown(
        report_of([record(1, overall=8, question="a | pipe?"), record(2, "agent_error", cost=None)], skipped=1)
    )
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
    assert rows == [
        r"| 1 | a \| pipe? | answer | 2.0 s | 100 | $0.0010 | 2 / 3 (1) | 8.0 |",
        "| 2 | question 2? | agent_error | 2.0 s | - | - | 2 / 3 (1) | - |",
    ]
    assert "| answered | 1 / 2 (failed: agent_error 1) |" in text
    assert "| references | 4 linked of 6 found, 2 unverifiable |" in text
    assert "overall 8.0" in text and "Skipped lines: 9 (malformed)." in text


# --------------------------------------------------------------------------- the HTML page

HOSTILE = '<script>alert(1)</script><img src="https://example.com/x.png">'


def test_the_page_is_self_contained_and_escapes_what_it_shows(tmp_path: Path) -> None:
    records = [record(i, seconds=float(i), cost=0.001 * i, overall=i % 11) for i in range(1, 9)]
    records.append(record(9, "timeout", question=HOSTILE, reference=HOSTILE))
    page = render(report_of(records))
    assert page.count("<svg") == 5  # time, cost, outcomes, score, criteria
    # Nothing fetched, nothing run: no script, no stylesheet, image or frame from anywhere.
    active = re.compile(
        r"""<(?:script|link|img|iframe|object|embed)\b|\b(?:src|href)\s*=\s*["']|@import|url\(""", re.IGNORECASE
    )
    assert active.search(page) is None, active.search(page)
    assert "https://" not in page.replace("https://example.com/x.png", "")  # only in the question's escaped text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<rect") >= 8
    # Without a judge, no score charts; with no cost metered, the chart says so.
    plain = render(report_of([record(1, cost=None)], judge=None))
    assert plain.count("<svg") == 2 and "no values" in plain
    written = save(report_of(records), tmp_path / "out")
    assert [p.name for p in written] == ["report.json", "report.md", "report.html"]
    assert Report.model_validate_json(written[0].read_text()).records[8].question == HOSTILE


# --------------------------------------------------------------------------- compare


def test_compare_matches_questions_by_text_and_shows_differences(tmp_path: Path) -> None:
    a = report_of(
        [
            record(1, seconds=10.0, cost=0.02, overall=5, question="Where?"),
            record(2, "timeout", seconds=60.0, question="Why?"),
            record(3, question="Only in A?"),
        ]
    )
    b = report_of(
        [
            record(7, seconds=4.0, cost=0.01, overall=8, question="Where?"),
            record(8, seconds=20.0, question="  Why? "),
            record(9, question="Only in B?"),
        ]
    )
    text = compare(a, b, "before.json", "after.json")
    assert (
        "| Where? | answer | 10.0 → 4.0 (-6.0 s) | $0.0200 → $0.0100 (-0.0100) | 2 (1) → 2 (1) | "
        "5.0 → 8.0 (+3.0) |" in text
    )
    assert "| Why? | timeout → **answer** | 60.0 → 20.0 (-40.0 s) |" in text
    assert "| answered | 2 | 3 | +1 |" in text
    assert "Only in before.json: line 3 (Only in A?)" in text and "Only in after.json: line 9 (Only in B?)" in text
    assert "| score: overall | 5.00 | 8.00 | +3.00 |" in text


def test_compare_refuses_what_is_no_report(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(report_of([record(1)]).model_dump_json())
    assert load(good).records[0].line == 1
    for name, text, expected in [
        ("broken.json", "{", "not an askbox eval report"),
        ("other.json", json.dumps({"records": []}), "not an askbox eval report (run: Field required)"),
        (
            "future.json",
            report_of([record(1)]).model_copy(update={"version": 99}).model_dump_json(),
            "report version 99; this askbox reads version 1",
        ),
    ]:
        (tmp_path / name).write_text(text)
        with pytest.raises(BadReport, match=re.escape(expected)):
            load(tmp_path / name)
    with pytest.raises(BadReport, match=r"missing\.json"):
        load(tmp_path / "missing.json")


# --------------------------------------------------------------------------- the command line


def test_the_command_says_what_is_wrong_in_one_line_each(tmp_path: Path, capsys) -> None:
    from bot.cli import main

    assert main(["eval", str(tmp_path / "nothing.jsonl")]) == 2
    assert (
        capsys.readouterr().err == f"askbox: eval: cannot read {tmp_path / 'nothing.jsonl'}: "
        "No such file or directory\n"
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": ""}\n\n[1]\n')
    assert main(["eval", str(bad)]) == 2  # nothing left to ask: nothing runs, no Redis needed
    assert capsys.readouterr().err.splitlines() == [
        f'askbox: eval: {bad}:1: "question": String should have at least 1 character; skipped',
        f"askbox: eval: {bad}:3: a JSON object is expected, not list; skipped",
        f"askbox: eval: {bad} has no question to ask",
    ]
    assert main(["eval", "compare", str(bad)]) == 2
    assert "give two reports" in capsys.readouterr().err
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(report_of([record(1, overall=5)]).model_dump_json())
    b.write_text(report_of([record(1, overall=7)]).model_dump_json())
    assert main(["eval", "compare", str(a), str(b)]) == 0
    assert "| score: overall | 5.00 | 7.00 | +2.00 |" in capsys.readouterr().out
    assert main(["eval", "compare", str(a), str(bad)]) == 2
    assert capsys.readouterr().err.startswith(f"askbox: eval compare: {bad}: not an askbox eval report")
