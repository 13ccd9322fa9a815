"""``askbox eval`` end to end: a real ``askbox eval`` process, real ``askbox worker`` and
``askbox gateway`` processes, the real Gemini CLI in real sandboxes, real Redis, and the
fake Gemini API as both the agent's model (answering with references) and the judge
(structured scores).

The questions file holds an answered question with a reference, a reference-less one, a
question that fails (a repository nobody configured), a feedback export's line and a
malformed line: the malformed one is named in one line and skipped, every other one is
asked, measured (time, tokens and cost as the gateway metered them, references found /
linked / unverifiable) and, where it has a reference, judged; then the same file runs
``--inline`` and the two reports are compared.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from rq import Worker

from jobs.evals import judge
from jobs.evals.report import Report
from tests.fakes.gemini_api import FakeGeminiAPI, RecordedRequest, Text
from tests.integration.pipeline_helpers import ASKBOX, Workers, wait_for, worker_env
from tests.integration.test_citations_access import BLOB, commit_all

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.usefixtures("no_leftovers")]

JUDGE_MODEL = "gemini-2.5-pro"
WHERE = "Where is answer() defined?"
README = "What does the README say?"
WHY = "Why does answer() return 42?"
ANSWERS = {  # what the agent's model answers, by question
    WHERE: "`answer()` returns 42: see `src/app.py` (lines 1-2). It is not in `src/ghost.py:3`.",
    README: "It says `# demo repo`; see README.md.",
    WHY: "Because `src/app.py:2` says so.",
}
SCORES = {WHERE: [9, 8, 10, 7, 9], WHY: [4, 3, 6, 5, 2]}


def is_judge(request: RecordedRequest) -> bool:
    return judge.SYSTEM.splitlines()[0] in request.system_text()


def model(request: RecordedRequest) -> Text:
    """The judge scores by the question it is given; the agent answers by the question it was asked."""
    text = request.text()
    if is_judge(request):
        question = text.split("Question:\n", 1)[1].split("\n\nReference answer:", 1)[0]
        scores = dict(zip(judge.CRITERIA, SCORES[question], strict=True))
        return Text(json.dumps({**scores, "rationale": f"Scored {question}"}))
    asked = [q for q in ANSWERS if q in text]
    return Text(ANSWERS[asked[0]], chunks=2) if asked else Text("OK")


def questions_file(path: Path) -> Path:
    lines = [
        json.dumps({"question": WHERE, "answer": "answer() is in src/app.py and returns 42."}),
        json.dumps({"question": README}),  # no reference: answered, not judged
        json.dumps({"question": "What is in the other one?", "repo": "nope"}),  # fails: no such repository
        '{"question": "broken", ',  # malformed
        # As `askbox feedback export` writes it: voted up, so its answer is the reference.
        json.dumps(
            {
                "question": WHY,
                "answer": "Its body returns the constant 42.",
                "verdict": "up",
                "repo": "demo",
                "job_id": "slack-T-C-1",
                "model": "gemini-2.5-flash",
            }
        ),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_eval(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ASKBOX, "eval", *args], env=env, capture_output=True, text=True, timeout=600)


def test_eval_through_the_queue_and_inline_then_compared(
    redis_server, redis, repo, egress_root, gateway, tmp_path, built_images
):
    sha = commit_all(repo)  # a GitHub remote: references become links at this commit
    with FakeGeminiAPI(default=model) as api:
        proxy = gateway(api.base_url, redis_server.url)
        env = worker_env(
            redis_server,
            repo,
            egress_root,
            ASKBOX_AGENT="gemini",
            ASKBOX_RETRIES="0",
            ASKBOX_GATEWAY_SOCKET_DIR=str(proxy.socket_dir),
        )
        path = questions_file(tmp_path / "questions.jsonl")
        pool = Workers(env)
        pool.start(1, log_dir=tmp_path)
        try:
            wait_for(lambda: Worker.all(connection=redis), 30, "the worker to register")
            queued = run_eval(
                env,
                str(path),
                "--repo",
                "demo",
                "--judge",
                JUDGE_MODEL,
                "--concurrency",
                "2",
                "--out",
                str(tmp_path / "queued"),
            )
        finally:
            pool.stop()
        inline = run_eval(
            env, str(path), "--repo", "demo", "--judge", JUDGE_MODEL, "--inline", "--out", str(tmp_path / "inline")
        )
        judged = [r for r in api.generate_requests if is_judge(r)]

    # The malformed line: one message naming it; the rest ran (exit 1: a line was skipped).
    for done in (queued, inline):
        assert done.returncode == 1, done.stderr + pool.tail()
        named = [line for line in done.stderr.splitlines() if f"{path}:4:" in line]
        assert (
            len(named) == 1
            and named[0]
            == f"askbox: eval: {path}:4: not JSON (Expecting property name enclosed in double quotes "
            "at column 24); skipped"
        ), done.stderr
        assert "Traceback" not in done.stderr
    report = Report.model_validate_json((tmp_path / "queued" / "report.json").read_text())
    records = {r.line: r for r in report.records}
    assert sorted(records) == [1, 2, 3, 5] and [s.line for s in report.skipped] == [4]

    where, readme, failed, why = records[1], records[2], records[3], records[5]
    assert [where.outcome, readme.outcome, failed.outcome, why.outcome] == ["answer", "answer", "rejected", "answer"]
    assert "nope" in failed.answer and failed.judge_note == "not answered" and failed.tokens is None
    # References: found, linked at the pinned commit, and the made-up one unverifiable.
    assert f"{BLOB}/{sha}/src/app.py#L1-L2" in where.answer and "`src/ghost.py:3`" in where.answer
    assert f"{BLOB}/{sha}/src/app.py#L1" in where.answer  # `answer()`: the symbol's one definition
    assert (where.references, where.linked, where.unverifiable) == (3, 2, 1)
    assert (readme.references, readme.linked, why.references, why.linked) == (1, 1, 1, 1)
    # Time and the gateway's metering of each agent's run.
    for record in (where, readme, why):
        assert record.seconds and record.seconds > 0 and record.waited is not None
        assert record.tokens and record.tokens > 0 and record.cost_usd and record.cost_usd > 0
        assert record.commit == sha and record.agent == "gemini"
    # The judge: structured scores through the gateway, only where there is a reference and an answer.
    assert where.judged.scores == dict(zip(judge.CRITERIA, SCORES[WHERE], strict=True)), where
    assert where.judged.overall == 8.6 and where.judged.rationale == f"Scored {WHERE}"
    assert why.judged.overall == 4.0 and why.verdict == "up" and why.reference == "Its body returns the constant 42."
    assert readme.judged is None and readme.judge_note == "no reference answer"
    assert len(judged) == 4 and {r.model for r in judged} == {JUDGE_MODEL} and all(r.wants_json for r in judged)
    # Each judge call is metered like any other: its tokens are what the fake reported.
    per_run = sorted(r.usage["totalTokenCount"] for r in judged)
    both = json.loads((tmp_path / "inline" / "report.json").read_text())["records"]
    reported = sorted([where.judge_tokens, why.judge_tokens] + [r["judge_tokens"] for r in both if r["judged"]])
    assert reported == per_run and all(t > 0 for t in reported)
    assert where.judge_cost_usd > 0
    totals = report.totals
    assert (totals.questions, totals.answered, totals.failed, totals.skipped_lines) == (4, 3, {"rejected": 1}, 1)
    assert (totals.references, totals.linked, totals.unverifiable, totals.judged) == (5, 4, 1, 2)
    assert totals.scores["overall"] == 6.3 and totals.tokens == where.tokens + readme.tokens + why.tokens
    # The Markdown (also on stdout) and the page.
    markdown = (tmp_path / "queued" / "report.md").read_text()
    assert markdown in queued.stdout + "\n" and "| 1 | Where is answer() defined? | answer |" in markdown
    page = (tmp_path / "queued" / "report.html").read_text()
    assert page.count("<svg") == 5 and "Where is answer() defined?" in page

    # Inline: the same pipeline in the eval's own process gives the same outcomes and links.
    by_line = {r["line"]: r for r in both}
    assert [by_line[n]["outcome"] for n in (1, 2, 3, 5)] == ["answer", "answer", "rejected", "answer"]
    assert by_line[1]["answer"] == where.answer and by_line[1]["waited"] is None

    compared = subprocess.run(
        [ASKBOX, "eval", "compare", str(tmp_path / "queued" / "report.json"), str(tmp_path / "inline" / "report.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert compared.returncode == 0, compared.stderr
    assert "| answered | 3 | 3 | +0 |" in compared.stdout
    assert f"| {WHERE} | answer |" in compared.stdout and "| score: overall | 6.30 | 6.30 | +0.00 |" in compared.stdout
