"""What the stages of the pipeline hand each other: frozen values, each what the next
stage needs and nothing more."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobs.memory import Conversation, ThreadMemory
from jobs.repos import Pin, RepoRef
from jobs.side_tasks.side_call import GeminiCalls
from sandbox.agents.adapters import Agent
from sandbox.agents.events import AgentError, Result


@dataclass(frozen=True)
class Target:
    """What the question is about and who answers it: authorized, resolved, checked."""

    repo: RepoRef
    agent: Agent
    model: str | None


@dataclass(frozen=True)
class Pinned:
    """The target at the commit the question is answered from."""

    target: Target
    pin: Pin

    @property
    def common(self) -> dict[str, Any]:
        """What every final of this question says about where its answer came from."""
        target = self.target
        return {"repo": target.repo.name, "commit": self.pin.commit, "agent": target.agent.name, "model": target.model}


@dataclass(frozen=True)
class Thread:
    """The conversation the question belongs to, and the side-task calls that keep it."""

    memory: ThreadMemory
    conversation: Conversation
    side: GeminiCalls


@dataclass(frozen=True)
class AgentOutcome:
    """How the agent's run ended, and (metered by the gateway) what it used."""

    terminal: Result | AgentError
    usage: dict[str, Any] = field(default_factory=dict)  # the Final's tokens and cost_usd
