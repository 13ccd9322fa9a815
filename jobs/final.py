"""The one final message of a question: what it says (jobs/outbox.py makes it one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

from pydantic import BaseModel

from sandbox.outcome import Ending

# A question ends with an answer, an agent error or a rejection, or as the sandbox ended
# its run (timeout, oom, cancelled, infra): those are the sandbox's words, not spelled
# again here. Plain strings, as job results, job metadata and metrics labels hold them.
FinalKind = Literal["answer", "agent_error", "rejected", "timeout", "oom", "cancelled", "infra"]
# Spelled out for the type checker; the sandbox's endings stay the one source of the last four.
assert set(get_args(FinalKind)) - {"answer", "agent_error", "rejected"} == {e.value for e in Ending}


class Final(BaseModel):
    kind: FinalKind
    text: str  # what the user reads: the answer, or what happened and what to do
    repo: str | None = None
    commit: str | None = None
    commit_url: str | None = None  # the commit on the repository's web host, when it has one
    agent: str | None = None
    model: str | None = None
    duration: float | None = None
    cached: bool = False
    reference: str | None = None  # the job id, for infrastructure errors
    tokens: int | None = None  # metered by the model gateway, when it fronted the agent
    cost_usd: float | None = None  # estimated from the gateway's price table
    summary: str | None = None  # two or three lines on top of a long answer (jobs/side_tasks/summary.py)
    verified: int | None = None  # references in the answer checked against the commit and linked (jobs/citations.py)
    references: int | None = None  # those and the ones that named a place the commit does not have

    def footer(self, text: Callable[[str], str] = str, commit: Callable[[str, str], str] | None = None) -> str:
        """One line: repo, commit, agent/model, time, usage. ``text`` renders each plain
        part (e.g. escaping), ``commit(short_sha, url)`` the commit when it has a link."""
        short = self.commit[:7] if self.commit else None
        parts = [text(p) for p in (self.repo, short) if p]
        if short and self.commit_url and commit is not None:
            parts[-1] = commit(short, self.commit_url)
        who = "/".join(p for p in (self.agent, self.model) if p)
        rest = [who] if who else []
        if self.duration is not None:
            rest.append(f"{self.duration:.1f} s")
        if self.tokens:
            rest.append(f"{self.tokens:,} tokens")
        if self.cost_usd:
            rest.append(f"~${self.cost_usd:.4f}")
        if self.verified:
            rest.append(f"{self.verified} reference{'s' if self.verified != 1 else ''} verified")
        if self.cached:
            rest.append("cached")
        return " · ".join(parts + [text(p) for p in rest])
