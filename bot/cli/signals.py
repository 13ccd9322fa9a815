"""SIGTERM and SIGHUP end a CLI command that owns a sandbox the way Ctrl-C does.

systemd, ``docker stop`` and ``kill`` send SIGTERM; a closed terminal sends SIGHUP.
Python's default for both is to die on the spot, leaving the sandbox running until its
deadline. Raised as ``KeyboardInterrupt`` instead, they take the path Ctrl-C takes: the
run is cancelled and its container removed before the process exits.
"""

from __future__ import annotations

import signal
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the main thread is (a KeyboardInterrupt, so every
    ``except KeyboardInterrupt`` that cancels a run cancels it for these too)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, frame: FrameType | None) -> None:
    # Once is enough: a second signal during the cleanup must not cut the cleanup short.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(signum)


def cancel_on_termination() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise)
