"""An evaluation's questions: one JSON object per line of a JSONL file.

The shape public code-QA benchmarks use, ``{"question": …, "answer": <reference>,
"repo": <name>}`` (``answer`` and ``repo`` optional), and what ``askbox feedback export``
writes, ``{"question", "answer", "verdict", "repo", …}``: an answer voted ``up`` is the
reference; one voted ``down`` is no reference, it is kept as the earlier answer to read
beside the new one. Other keys are ignored (an export carries more).

A line that is not such an object is skipped with one message naming it
(``FILE:LINE: what is wrong``); the other lines still run. Blank lines are nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.question import MAX_QUESTION_CHARS


class _Line(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    answer: str | None = None
    repo: str | None = Field(default=None, min_length=1)
    verdict: Literal["up", "down"] | None = None


@dataclass(frozen=True)
class EvalQuestion:
    """One question of the file, numbered by its line."""

    line: int
    question: str
    reference: str | None = None  # what a good answer says (judged against)
    repo: str | None = None  # its own repository, over --repo
    verdict: str | None = None  # from a feedback export
    previous: str | None = None  # an answer voted down (a feedback export): shown, never the reference


@dataclass(frozen=True)
class Skipped:
    """A line that is not a question, and why."""

    line: int
    error: str

    def message(self, path: Path | str) -> str:
        return f"{path}:{self.line}: {self.error}"


def read_questions(path: Path) -> tuple[list[EvalQuestion], list[Skipped]]:
    """The file's questions and the lines skipped (raises OSError for a file it cannot read)."""
    questions: list[EvalQuestion] = []
    skipped: list[Skipped] = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            found = parse_line(number, text)
            if isinstance(found, EvalQuestion):
                questions.append(found)
            else:
                skipped.append(found)
    return questions, skipped


def parse_line(number: int, text: str) -> EvalQuestion | Skipped:
    try:
        data = json.loads(text.rstrip("\r\n"))
    except json.JSONDecodeError as exc:  # its own "line 1" is the file's line `number`
        return Skipped(number, f"not JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(data, dict):
        return Skipped(number, f"a JSON object is expected, not {type(data).__name__}")
    try:
        line = _Line.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"]) or "the line"
        return Skipped(
            number,
            f'"{where}": {error["msg"]}'
            if error["type"] != "missing"
            else f'no "{where}": each line needs {{"question": "…"}}',
        )
    if not line.question.strip():
        return Skipped(number, '"question": the question is empty')
    voted_down = line.verdict == "down"
    return EvalQuestion(
        number,
        line.question.strip(),
        reference=None if voted_down else (line.answer or None),
        repo=line.repo,
        verdict=line.verdict,
        previous=line.answer if voted_down else None,
    )
