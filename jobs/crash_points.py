"""Test-only fault injection: die at a named point, as a SIGKILL would leave things.

``ASKBOX_TEST_CRASH_AT`` (``JobSettings.test_crash_at``) names the point; it is empty in
every deployment, where ``crash_point`` does nothing. The fault-injection suite
(tests/integration/test_faults.py) needs a crash at an exact place, which no timing
can hit reliably.
"""

from __future__ import annotations

import os
import signal


def crash_point(configured: str, name: str, *, with_parent: bool = False) -> None:
    """``os._exit`` here when ``configured`` names this point: no cleanup, no finally,
    like a SIGKILL. ``with_parent``: the work-horse takes its worker down with it."""
    if not configured or configured != name:
        return
    if with_parent:
        os.kill(os.getppid(), signal.SIGKILL)
    os._exit(137)
