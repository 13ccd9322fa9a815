"""The one final message of a question: what it says (jobs/outbox.py makes it one)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from sandbox.outcome import Ending

# A question ends with an answer, an agent error or a rejection, or as the sandbox ended
# its run (timeout, oom, cancelled, infra): those are the sandbox's words, not spelled
# again here. Plain strings, as job results, job metadata and metrics labels hold them.
FinalKind = Literal[("answer", "agent_error", "rejected", *(ending.value for ending in Ending))]


class Final(BaseModel):
    kind: FinalKind
    text: str  # what the user reads: the answer, or what happened and what to do
    repo: str | None = None
    commit: str | None = None
    agent: str | None = None
    model: str | None = None
    duration: float | None = None
    cached: bool = False
    reference: str | None = None  # the job id, for infrastructure errors
    tokens: int | None = None  # metered by the model gateway, when it fronted the agent
    cost_usd: float | None = None  # estimated from the gateway's price table
    summary: str | None = None  # two or three lines on top of a long answer (jobs/gemini/summary.py)

    def footer(self) -> str:
        parts = [p for p in (self.repo, self.commit and self.commit[:7]) if p]
        who = "/".join(p for p in (self.agent, self.model) if p)
        if who:
            parts.append(who)
        if self.duration is not None:
            parts.append(f"{self.duration:.1f} s")
        if self.tokens:
            parts.append(f"{self.tokens:,} tokens")
        if self.cost_usd:
            parts.append(f"~${self.cost_usd:.4f}")
        if self.cached:
            parts.append("cached")
        return " · ".join(parts)
