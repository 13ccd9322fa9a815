"""Who owns a run: a process identity that survives PID reuse."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def this_process() -> str:
    # Not cached: an RQ work-horse is a fork and must not inherit its parent's identity.
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def is_alive_here(owner: str) -> bool | None:
    """True/False for an owner on this host; None when it belongs to another host."""
    try:
        host, pid, started = owner.rsplit(":", 2)
    except ValueError:
        return False
    if host != socket.gethostname():
        return None
    return pid.isdigit() and _start_time(int(pid)) == started
