"""How a sandboxed run ended."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class OutcomeKind(StrEnum):
    OK = "ok"
    EXIT_ERROR = "exit_error"  # the command exited non-zero
    TIMEOUT = "timeout"  # killed at its wall-clock deadline
    OOM = "oom"  # killed by the kernel for exceeding its memory limit
    CANCELLED = "cancelled"  # cancelled by us or killed from outside
    INFRA_ERROR = "infra_error"  # Docker unreachable, image missing, runtime missing, ...


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
