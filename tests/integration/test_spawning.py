"""A fork never catches a program half started (jobs/spawning.py).

The worker forks a work-horse per question while its refresher thread starts git; a fork
in the middle of ``subprocess.Popen`` left the child's pipe open in the work-horse, and the
thread waited for the work-horse to exit (a deadlock with the mirror's lock). Here one
thread starts short programs in a loop while the main thread forks long-lived children:
each start must finish in its own time, not the children's.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable

from jobs import spawning

CHILD_LIVES = 3.0


def _slowest_start_while_forking(start: Callable[..., subprocess.Popen], forks: int = 150) -> float:
    durations: list[float] = []
    done = threading.Event()

    def starter() -> None:
        while not done.is_set():
            began = time.monotonic()
            with start(["true"], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
                proc.communicate()
            durations.append(time.monotonic() - began)

    thread = threading.Thread(target=starter, daemon=True)
    thread.start()
    children = []
    for _ in range(forks):
        pid = os.fork()
        if pid == 0:  # a work-horse that lives a while and never execs
            time.sleep(CHILD_LIVES)
            os._exit(0)
        children.append(pid)
        time.sleep(0.002)
    done.set()
    thread.join(timeout=CHILD_LIVES * 3)
    for pid in children:
        os.waitpid(pid, 0)
    return max(durations)


def test_a_program_started_while_the_process_forks_is_not_held_by_the_fork() -> None:
    assert _slowest_start_while_forking(spawning.start) < CHILD_LIVES / 2


def test_without_the_lock_a_fork_does_hold_it() -> None:
    """The control: plain Popen in the same loop is caught by a fork (the bug is real)."""
    assert _slowest_start_while_forking(subprocess.Popen) >= CHILD_LIVES / 2
