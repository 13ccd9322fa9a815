"""How a sandboxed run ended, and the one spelling of the endings the sandbox decides.

A run ends by itself (the command exited, zero or not) or the sandbox ends it: at its
deadline, out of memory, cancelled, or because the infrastructure failed. ``Ending`` names
those four, once. The other vocabularies that speak of them take their values from it
instead of spelling them again: ``OutcomeKind`` here, the agents' ``ErrorKind``
(``sandbox.agents.events``) and a question's final message kind (``jobs.final``). So
"timeout" is the same word from the container to the user's thread, and adding an ending
means adding it here (``carries_every_ending`` refuses an enum that forgot one).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from pydantic import BaseModel


class Ending(StrEnum):
    """The ways the sandbox, not the program inside it, ends a run."""

    TIMEOUT = "timeout"  # killed at its wall-clock deadline
    OOM = "oom"  # killed by the kernel for exceeding its memory limit
    CANCELLED = "cancelled"  # cancelled by us or killed from outside
    INFRA = "infra"  # Docker unreachable, image or runtime missing, egress proxy trouble, ...

    @classmethod
    def of(cls, kind: str) -> Ending | None:
        """The ending a kind from another vocabulary stands for; None when it is not one
        (the run ended by itself, or the agent reported the failure)."""
        try:
            return cls(kind)
        except ValueError:
            return None


class HasEndings:
    """Mixin for an enum whose kinds include the endings (as ``Ending``'s values)."""

    @property
    def ending(self) -> Ending | None:
        """The sandbox's ending this kind stands for; None for the enum's other kinds."""
        return Ending.of(str(self))


_Kinds = TypeVar("_Kinds", bound=type[StrEnum])


def carries_every_ending(kinds: _Kinds) -> _Kinds:
    """Class decorator for an enum that includes the endings: fail at import, not at the
    first timeout in production, if it misses one."""
    missing = {e.value for e in Ending} - {k.value for k in kinds}
    if missing:
        raise TypeError(f"{kinds.__name__} lacks the sandbox endings {sorted(missing)}")
    return kinds


@carries_every_ending
class OutcomeKind(HasEndings, StrEnum):
    """How a run ended: by itself (ok, exit_error) or by the sandbox (an ``Ending``)."""

    OK = "ok"
    EXIT_ERROR = "exit_error"  # the command exited non-zero
    # The sandbox ended it (meanings: ``Ending``), under the names this enum always had.
    TIMEOUT = Ending.TIMEOUT.value
    OOM = Ending.OOM.value
    CANCELLED = Ending.CANCELLED.value
    INFRA_ERROR = Ending.INFRA.value


# Exit codes the CLI uses, after coreutils' `timeout` and a SIGKILL.
EXIT_TIMEOUT = 124
EXIT_KILLED = 137
EXIT_INFRA = 125  # what `docker run` itself returns when the daemon fails


class Outcome(BaseModel):
    kind: OutcomeKind
    exit_code: int | None = None
    message: str = ""
    stderr_tail: str = ""
    duration: float = 0.0
    truncated_lines: int = 0
    stopped_early: bool = False  # the caller stopped it on purpose after getting what it needed

    @property
    def ok(self) -> bool:
        return self.kind is OutcomeKind.OK

    def cli_exit_code(self) -> int:
        match self.kind:
            case OutcomeKind.OK:
                return 0
            case OutcomeKind.EXIT_ERROR:
                return self.exit_code or 1
            case OutcomeKind.TIMEOUT:
                return EXIT_TIMEOUT
            case OutcomeKind.OOM | OutcomeKind.CANCELLED:
                return EXIT_KILLED
            case OutcomeKind.INFRA_ERROR:
                return EXIT_INFRA

    def describe(self) -> str:
        text = {
            OutcomeKind.OK: "finished",
            OutcomeKind.EXIT_ERROR: f"exited with code {self.exit_code}",
            OutcomeKind.TIMEOUT: f"timed out after {self.duration:.1f} s",
            OutcomeKind.OOM: "killed: out of memory",
            OutcomeKind.CANCELLED: "cancelled",
            OutcomeKind.INFRA_ERROR: "infrastructure error",
        }[self.kind]
        if self.message:
            text += f": {self.message}"
        if self.truncated_lines:
            text += f" ({self.truncated_lines} over-long output line(s) truncated)"
        return text
