"""File locks (``fcntl.flock``) that a forked work-horse does not inherit.

flock locks belong to the open file, and a fork shares it: a work-horse forked while the
worker's refresher thread holds a mirror's lock would hold it too, for as long as it
lives, and then wait forever on that very lock for its own question. So every lock taken
here is registered, and a forked child closes its copies (closing, not unlocking: the
parent keeps its lock).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_held: set[int] = set()
_guard = threading.Lock()


def _close_inherited() -> None:
    for fd in list(_held):
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_close_inherited)


class WouldBlock(Exception):
    """A non-blocking lock is held by someone else."""


@contextmanager
def locked(path: Path, exclusive: bool = True, blocking: bool = True) -> Iterator[int]:
    """Hold ``path``'s lock (created if missing). A lock file replaced while we waited
    (removed by a cleanup) is opened again, so the lock held is the file's current one."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        with _guard:
            _held.add(fd)
        try:
            flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
            try:
                fcntl.flock(fd, flags)
            except BlockingIOError:
                raise WouldBlock(str(path)) from None
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                break
        except BaseException:
            _release(fd)
            raise
        _release(fd)  # removed or replaced while we waited: take the new one
    try:
        yield fd
    finally:
        _release(fd)


def _release(fd: int) -> None:
    with _guard:
        _held.discard(fd)
    os.close(fd)  # closing the last copy releases the lock
