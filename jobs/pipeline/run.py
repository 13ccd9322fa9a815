"""One question's run: what every stage of the pipeline reads, and where it ends up.

A ``Run`` is made by an entry point (the worker's job, ``askbox ask --inline``, ``askbox
eval``) with the question, the settings tree, Redis, an id and a ``Destination``: the
only parts that differ between them. The stages (jobs/pipeline/stages.py) read it and
keep on it what they learn on the way (the snapshot they mounted, why the gateway
stopped the agent).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from gateway.client import SessionMeta, SessionState
from jobs import keys
from jobs.final import Final
from jobs.question import Question
from jobs.redaction import Redactor
from jobs.repos import Workspace
from jobs.settings import Settings
from sandbox.agents.events import AgentError, AgentEvent, Result


class InfraFault(RuntimeError):
    """Raised only when nothing reached the user yet and the entry point will run the
    question again (the worker: RQ retries the job)."""


class Ended(Exception):
    """A stage ended the question early (a rejection, a triage reply, a cache hit):
    the sequence goes straight to its final."""

    def __init__(self, final: Final) -> None:
        super().__init__(final.kind)
        self.final = final


class Destination:
    """Where a run's progress and its one final message go; each entry point has its
    own (the job's meta and Slack thread, the terminal, an eval record). The methods are
    the run's boundaries: the agent started, showed a step, ended; the question ended.
    The defaults do nothing."""

    def pinned(self, where: dict[str, Any]) -> None:
        """The question is pinned: repo, commit, agent and model (``Pinned.common``)."""

    def started(self) -> None:
        """The agent's sandbox is about to start."""

    def event(self, event: AgentEvent) -> None:
        """A step of the agent's, redacted, as it happens."""

    def ended(self, terminal: Result | AgentError, usage: SessionState | None) -> None:
        """The agent's run ended (its raw terminal event, redacted); ``usage`` is what the
        gateway metered for it, when the gateway fronted it."""

    def steps(self) -> list[str]:
        """The progress lines shown so far (a timeout says what was done)."""
        return []

    def retry(self) -> bool:
        """An infrastructure fault: True when the question will be run again (nothing
        reached the user yet, and the entry point retries); the run then raises
        ``InfraFault``. By default there is no second run."""
        return False

    def final(self, final: Final) -> None:
        """The question's one final message."""


@dataclass(eq=False)
class Run:
    """One question's run. ``run_id`` names it everywhere (the job's id, the sandbox's run
    id, its gateway session, its cancel key)."""

    question: Question
    settings: Settings
    redis: Redis
    destination: Destination
    run_id: str
    # A directory instead of a configured name: the worker's setting (terminal questions
    # only), always for the operator's own process (the CLI).
    allow_paths: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)  # the sandbox's (who, which job, which worker)
    # A process that runs questions and exits (the CLI): the egress proxy a run used is
    # removed after it, as no worker's reaper will.
    one_off: bool = False
    started: float = field(default_factory=time.monotonic)
    # Learned on the way.
    redact: Redactor = field(init=False)
    held: ExitStack = field(default_factory=ExitStack)  # the snapshot's lease, until the final is out
    workspace: Workspace | None = None
    stop_reason: str | None = None  # why the gateway ended the agent's run, if it did
    outage: str | None = None  # the model API is failing and every gateway paused it
    provider: str = "gemini"  # the agent's gateway provider (whose breaker says the API is down)

    def __post_init__(self) -> None:
        # Every configured secret, in every form, is kept out of what this question shows.
        self.redact = Redactor(self.settings.secret_values())

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def cancelled_by(self) -> str | None:
        """Who asked to cancel this run (``askbox cancel``, Slack's button), if anyone."""
        who = self.redis.get(keys.cancel_request(self.run_id))
        return who.decode() if isinstance(who, bytes) else who

    def session_meta(self, repo: str, model: str | None) -> SessionMeta:
        """What the gateway attributes this run's spend to."""
        origin = self.question.origin
        return SessionMeta(
            job_id=self.run_id,
            user=origin.user,
            team=origin.team,
            channel=origin.channel,
            repo=repo,
            model=model,
            ttl=int(self.settings.sandbox.sandbox_timeout) + self.settings.jobs.job_timeout_margin,
            budget_exempt=origin.user in self.settings.jobs.admins,
        )
