"""Starting a program from a thread of a process that forks.

The worker forks a work-horse for each question while its own threads (the repository
refresher) start git. A fork landing while another thread is inside ``subprocess.Popen``
copies that child's pipes, write ends included, into the work-horse, which never execs and
so never closes them: the thread then waits for an end-of-file that comes only when the
work-horse exits, while holding the mirror's lock the work-horse waits for. Both stop until
RQ kills the job (seen in the tests as questions stalled for 120 s on a busy machine).

So a program is started under one lock (``start``), and every ``os.fork`` of the process
takes the same lock first (``os.register_at_fork``): a fork never sees a child half
started. ``subprocess`` itself does not run these fork hooks (it does not fork through
``os.fork``), so starting a program under the lock cannot deadlock against itself. Only
the start is under the lock; reading the child's output is not. A file that programs
execute is written under it too (``write_program``), for the same reason.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

_STARTING = threading.Lock()


def _release() -> None:
    _STARTING.release()


os.register_at_fork(before=_STARTING.acquire, after_in_parent=_release, after_in_child=_release)


def write_program(path: Path, text: str) -> None:
    """Write a file that programs will execute (git's askpass script), under the same lock.

    A process forked while the file is open for writing keeps a write handle on it: a
    work-horse, which never execs, for its whole life. Executing the file then fails with
    ETXTBSY ("Text file busy") for as long as that process lives (a question was refused
    with "cannot exec askpass.sh: Text file busy"). Under the lock, no fork sees it open."""
    data = text.encode()
    with _STARTING:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o700)
        try:
            os.fchmod(fd, 0o700)
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)


def start(argv: list[str], **popen: Any) -> subprocess.Popen:
    """``subprocess.Popen(argv, **popen)``, never overlapping a fork of this process."""
    with _STARTING:
        return subprocess.Popen(argv, **popen)


def run(
    argv: list[str], timeout: float | None = None, input: Any = None, capture_output: bool = False, **popen: Any
) -> subprocess.CompletedProcess:
    """``subprocess.run`` (without ``check``) through ``start``: the output is read outside
    the lock; on a timeout the child is killed and ``TimeoutExpired`` raised, as
    subprocess.run does."""
    if capture_output:
        popen.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with start(argv, **popen) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)
