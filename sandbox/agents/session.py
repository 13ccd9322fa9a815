"""One agent answering one question in one sandbox, as a stream of ``AgentEvent``s.

Every session ends with exactly one terminal event: a ``Result`` or an ``AgentError``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sandbox.agents.adapters import Agent
from sandbox.agents.events import AgentError, AgentEvent, ErrorKind, Result, is_terminal
from sandbox.bridges import SocketBridge
from sandbox.outcome import Ending, Outcome
from sandbox.runner import Sandbox, SandboxRun
from sandbox.spec import Limits, Masks, SandboxSpec

# The prompt goes over stdin, so no argv limit applies; this cap keeps a runaway thread from
# costing a fortune in tokens, and stays far below the Gemini CLI's 8 MiB stdin cut-off
# (past which it silently truncates).
MAX_PROMPT_BYTES = 1024 * 1024


class PromptTooLong(ValueError):
    pass


class AgentSession:
    def __init__(
        self,
        sandbox: Sandbox,
        agent: Agent,
        prompt: str,
        repo: Path | None = None,
        masks: Masks | None = None,
        model: str | None = None,
        limits: Limits | None = None,
        egress_allow: tuple[str, ...] | None = None,
        run_id: str | None = None,
        labels: dict[str, str] | None = None,
        runtime: str | None = None,
        bridges: tuple[SocketBridge, ...] = (),
    ) -> None:
        size = len(prompt.encode())
        if size > MAX_PROMPT_BYTES:
            raise PromptTooLong(f"the prompt is {size:,} bytes; the limit is {MAX_PROMPT_BYTES:,}")
        self.sandbox = sandbox
        self.agent = agent
        self.model = agent.model(model)
        extra: dict[str, Any] = {"run_id": run_id} if run_id else {}
        self.spec = SandboxSpec(
            image=agent.image(),
            command=agent.command(self.model),
            stdin=prompt.encode(),
            repo=repo,
            masks=masks or Masks(),
            env=agent.env(),
            secret_env=agent.secret_env(),
            limits=limits or Limits(),
            egress_allow=agent.endpoints() if egress_allow is None else egress_allow,
            labels={"agent": agent.name, **(labels or {})},
            runtime=runtime,
            bridges=bridges,
            **extra,
        )
        self.run: SandboxRun | None = None
        self.started = time.monotonic()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """From any thread: the session ends with an ``AgentError`` of kind ``cancelled``."""
        self._cancelled.set()
        if self.run is not None:
            self.run.cancel()

    def events(self) -> Iterator[AgentEvent]:
        parser = self.agent.parser()
        self.run = self.sandbox.run(self.spec)
        if self._cancelled.is_set():
            self.run.cancel()
        terminal: AgentEvent | None = None
        with self.run:
            for line in self.run:
                if line.stream != "stdout":
                    continue  # stderr is kept in the outcome's tail for the error message
                for event in parser.feed(line.text):
                    terminal = terminal or (event if is_terminal(event) else None)
                    yield event
                if parser.done:
                    self.run.stop()  # cursor-agent may never exit after its result
                    break
        outcome = self.run.outcome
        assert outcome is not None
        if terminal is not None:
            return
        sandbox_error = self._sandbox_error(outcome)
        if sandbox_error is not None:
            yield sandbox_error
            return
        events = parser.finish(outcome.exit_code, outcome.stderr_tail)
        yield from events
        if not any(is_terminal(e) for e in events):  # a parser must end the stream; make sure
            yield AgentError(kind=ErrorKind.AGENT, message=f"{self.agent.name} ended without an answer")

    def _sandbox_error(self, outcome: Outcome) -> AgentError | None:
        """The error for a run the sandbox ended; None when the agent ended by itself
        (its parser then says how). The error's kind is the sandbox's own word."""
        ending = outcome.kind.ending
        if ending is None:
            return None
        messages = {
            # The limit, not the measured run: stopping takes a moment past the deadline.
            Ending.TIMEOUT: f"timed out after {self.spec.limits.timeout:g} s",
            Ending.OOM: f"ran out of memory ({outcome.message})",
            Ending.CANCELLED: "cancelled",
            Ending.INFRA: outcome.message,
        }
        return AgentError(kind=ErrorKind(ending), message=messages[ending])


def answer(session: AgentSession) -> Result | AgentError:
    """Run to the end and return only the terminal event."""
    last: AgentEvent | None = None
    for event in session.events():
        if is_terminal(event):
            last = event
    assert isinstance(last, (Result, AgentError))
    return last
