"""A fork never catches a program half started (jobs/spawning.py).

The worker forks a work-horse per question while its refresher thread starts git; a fork
in the middle of ``subprocess.Popen`` left the child's pipe open in the work-horse, and the
thread waited for the work-horse to exit (a deadlock with the mirror's lock). Here one
thread starts short programs in a loop while the main thread forks long-lived children:
each start must finish in its own time, not the children's. Likewise a program file
written while the process forks: no child may be left holding it open for writing (exec of
it would then fail with ETXTBSY for the child's whole life).
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

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


def _programs_held_by_forks(
    write: Callable[[Path, str], object], directory: Path, forks: int = 150
) -> tuple[set[str], int | None]:
    """Program files that some forked child holds open after a thread wrote them in a loop
    while the main thread forked long-lived children (work-horses that never exec), and
    the errno of executing one of them while the children live (None: it ran)."""
    done = threading.Event()

    def writer() -> None:
        written = 0
        while not done.is_set():
            write(directory / f"program-{written}", "#!/bin/sh\nexit 0\n")
            written += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    children = []
    try:
        for _ in range(forks):
            pid = os.fork()
            if pid == 0:
                # Until killed below: a child that exits on its own could let go of the file
                # before the exec (a loaded machine took over 3 s to get there).
                time.sleep(600)
                os._exit(0)
            children.append(pid)
            time.sleep(0.002)
        done.set()
        thread.join(timeout=10)
        held = set()
        for pid in children:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith(str(directory / "program-")):
                    held.add(target)
        try:
            subprocess.run([min(held)] if held else ["true"], check=True)
        except OSError as exc:
            return held, exc.errno
        return held, None
    finally:
        done.set()
        for pid in children:
            os.kill(pid, 9)
            os.waitpid(pid, 0)


def test_a_program_written_while_the_process_forks_is_held_by_no_fork(tmp_path: Path) -> None:
    held, _ = _programs_held_by_forks(spawning.write_program, tmp_path)
    assert not held, f"forked children hold {len(held)} program file(s) open for writing"


def test_without_the_lock_a_fork_does_hold_a_program_open(tmp_path: Path) -> None:
    """The control: plain writes in the same loop are caught by a fork, and the program then
    cannot be executed (the bug is real)."""
    held, exec_errno = _programs_held_by_forks(lambda path, text: (path.write_text(text), path.chmod(0o700)), tmp_path)
    assert held, "no fork caught a write: the control did not reproduce the race"
    assert exec_errno == errno.ETXTBSY
