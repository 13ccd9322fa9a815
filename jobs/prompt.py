"""The prompt an agent gets: instructions, the thread so far, the question."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

INSTRUCTIONS = """\
You are answering a question about the code repository in the current directory
(/workspace). It is mounted read-only: do not try to change files. Read the code to
answer; cite file paths (and line numbers where useful). If the code does not tell,
say so rather than guess. Answer in Markdown, concisely."""


class Turn(BaseModel):
    question: str
    answer: str


def build_prompt(question: str, history: Sequence[Turn] = (), summary: str = "") -> str:
    parts = [INSTRUCTIONS]
    if summary:
        parts.append(f"Summary of the conversation so far:\n{summary}")
    if history:
        turns = "\n\n".join(f"Q: {t.question}\nA: {t.answer}" for t in history)
        parts.append(f"Earlier in this thread:\n{turns}")
    parts.append(f"Question:\n{question.strip()}")
    return "\n\n".join(parts)
