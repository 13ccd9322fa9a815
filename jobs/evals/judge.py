"""LLM-as-judge: an answer scored against the reference answer, 0-10 on five criteria.

One structured-output call through the model gateway per answer, with the side tasks'
machinery (jobs/side_tasks/side_call.py): the provider is ``ASKBOX_SIDE_PROVIDER``, the
model the one given (``askbox eval --judge MODEL``), the call metered and budgeted like
every other (its session is the question's id with ``-judge``), and what it used is
reported with its scores. A call that fails gives no score and says so; it never stops
the evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field
from redis import Redis

from gateway.client import SessionMeta
from jobs.side_tasks.settings import GeminiSettings
from jobs.side_tasks.side_call import GeminiCalls

CRITERIA = ("correctness", "completeness", "relevance", "clarity", "reasoning")
TIMEOUT = 120.0  # one call, waiting its turn under the gateway's limits included: a judge reads a long answer
MAX_CHARS = 40_000  # of each text given to the judge (a longer one is judged from its beginning)

SYSTEM = """\
You grade an answer to a question about a code repository, against a reference answer
written by someone who knows the code. Score each criterion from 0 (worst) to 10 (best):
- correctness: its claims agree with the reference and with each other; a claim the
  reference contradicts costs most;
- completeness: it covers the points of the reference that the question asks for;
- relevance: it answers the question asked, without padding;
- clarity: the asker can follow it (order, brevity, terms explained);
- reasoning: it shows its evidence from the code (files, lines, functions) and draws
  sound conclusions from it.
An answer may be right in other words than the reference's, or cite other places of the
same code. Judge what it says, not its formatting; its links point into the repository
and cannot be opened here. In `rationale`, say in one or two sentences what the scores
rest on."""


class Scores(BaseModel):
    """The judge's answer (a JSON schema the API enforces)."""

    correctness: int = Field(ge=0, le=10, description="0-10: agrees with the reference")
    completeness: int = Field(ge=0, le=10, description="0-10: covers what the question asks")
    relevance: int = Field(ge=0, le=10, description="0-10: answers the question asked")
    clarity: int = Field(ge=0, le=10, description="0-10: easy to follow")
    reasoning: int = Field(ge=0, le=10, description="0-10: evidence from the code, sound conclusions")
    rationale: str = Field(description="one or two sentences on what the scores rest on")


@dataclass(frozen=True)
class Judgement:
    """Scores (or why there are none) and what the judging used."""

    scores: dict[str, int] | None
    rationale: str = ""
    error: str | None = None  # why no scores
    tokens: int = 0
    cost_usd: float = 0.0

    @property
    def overall(self) -> float | None:
        """The mean of the five criteria."""
        return round(sum(self.scores.values()) / len(self.scores), 2) if self.scores else None


class Judge:
    def __init__(self, model: str, side: GeminiSettings, gateway_socket_dir: Path, redis: Redis) -> None:
        self.model = model
        self.side = side.model_copy(update={"side_model": model})
        self.gateway_socket_dir = gateway_socket_dir
        self.redis = redis

    def judge(self, meta: SessionMeta, question: str, reference: str, answer: str) -> Judgement:
        """``meta`` is the question's own (who asked, about which repository)."""
        calls = GeminiCalls(
            self.side, self.gateway_socket_dir, self.redis, meta.model_copy(update={"model": self.model})
        )
        prompt = (
            f"Question:\n{question[:MAX_CHARS]}\n\nReference answer:\n{reference[:MAX_CHARS]}\n\n"
            f"Answer to grade:\n{answer[:MAX_CHARS]}"
        )
        scores = calls.structured("judge", SYSTEM, prompt, Scores, TIMEOUT)
        tokens, cost = calls.tokens, round(calls.cost_usd, 6)
        if scores is None:
            return Judgement(
                None, error=f"the judge gave no scores: {calls.skipped or 'no answer'}", tokens=tokens, cost_usd=cost
            )
        return Judgement(
            {name: getattr(scores, name) for name in CRITERIA}, scores.rationale.strip(), tokens=tokens, cost_usd=cost
        )
