"""Run one command in one fresh, locked-down Docker container.

This package knows nothing of Slack, Redis or RQ: it can be used alone.
"""

from sandbox.outcome import Outcome, OutcomeKind
from sandbox.runner import OutputLine, Sandbox, SandboxRun
from sandbox.spec import SandboxSpec

__all__ = ["Outcome", "OutcomeKind", "OutputLine", "Sandbox", "SandboxRun", "SandboxSpec"]
