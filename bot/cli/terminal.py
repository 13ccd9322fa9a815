"""The terminal as a question's destination (``askbox ask --inline``): progress on stderr,
the answer on stdout, one line on stderr saying how it ended; or, with ``--json``, the
agent's events as NDJSON on stdout."""

from __future__ import annotations

import sys
import time

from bot.cli.output import err
from gateway.client import SessionState
from jobs.final import Final
from jobs.pipeline import Destination
from sandbox.agents.events import AgentError, AgentEvent, Result, ToolFinished, ToolStarted

# The process's exit status for each way a question ends (0: answered).
EXIT_CODES = {"answer": 0, "rejected": 2, "cancelled": 130, "infra": 125}


class Terminal(Destination):
    def __init__(self, as_json: bool = False) -> None:
        self.as_json = as_json
        self.started_at: float | None = None
        self.lines: list[str] = []
        self.exit_code = 1

    def started(self) -> None:
        self.started_at = time.monotonic()

    def event(self, event: AgentEvent) -> None:
        if self.as_json:
            print(event.model_dump_json(), flush=True)
            return
        elapsed = f"[{time.monotonic() - (self.started_at or time.monotonic()):6.1f}s]"
        if isinstance(event, ToolStarted):
            line = f"{elapsed} {event.summary}"
        elif isinstance(event, ToolFinished) and not event.ok:
            line = f"{elapsed} failed: {event.summary}" + (f": {event.detail}" if event.detail else "")
        else:
            return
        self.lines.append(line)
        print(line, file=sys.stderr, flush=True)

    def ended(self, terminal: Result | AgentError, usage: SessionState | None) -> None:
        if self.as_json:
            print(terminal.model_dump_json(), flush=True)

    def steps(self) -> list[str]:
        return self.lines

    def final(self, final: Final) -> None:
        self.exit_code = EXIT_CODES.get(final.kind, 1)
        if final.kind != "answer":
            err(f"{final.kind}: {final.text}")
            return
        if not self.as_json:
            if final.summary:
                print(f"In short: {final.summary}\n", flush=True)
            print(final.text, flush=True)
        who = "/".join(p for p in (final.agent, final.model) if p) or "askbox"
        rest = final.model_copy(update={"agent": None, "model": None}).footer()  # repo, commit, time, usage
        err(f"answered by {who}" + (f" · {rest}" if rest else ""))
