"""Run one command in one fresh, locked-down Docker container.

This package knows nothing of Slack, Redis or RQ: it can be used alone. Its names are
loaded on first use, so that importing ``sandbox.settings`` (as the bot does) does not
import Docker.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Outcome": "sandbox.outcome",
    "OutcomeKind": "sandbox.outcome",
    "OutputLine": "sandbox.runner",
    "Sandbox": "sandbox.runner",
    "SandboxRun": "sandbox.runner",
    "SandboxSpec": "sandbox.spec",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
