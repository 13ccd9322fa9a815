"""The host directories containers bind, and the one party that may change them.

The daemon resolves a bind mount's source when the container *starts*, not when it is
created: whoever can replace a source, or a directory on its way, between askbox
docker-filter's check and the start decides what is mounted (a symlink to /var/run: the
host's Docker socket). So nothing a container binds is writable by the filter's caller,
the worker; each such directory has one owner, the *sealing party*:

- snapshots: the worker builds them in ``<root>/staging/<slug>/`` (its own: the ``.blobs``
  store, builds, lock files); a finished build is *sealed*: moved (one rename, same file
  system, so hard links to the blobs stay) to ``<root>/sealed/<slug>/<name>``, which only
  the sealing party writes. Sandboxes may bind exactly ``sealed/<slug>/<name>``;
- egress sockets: ``<root>/<proxy>/`` and its ``runs/`` are the sealing party's; it makes
  each ``runs/run-<id>/`` and hands that one directory to the proxy's uid, which opens the
  run's socket in it. A proxy binds ``<root>/<proxy>``, a sandbox ``.../runs/run-<id>``.

The sealing party is whoever may write there: in the plain deployment the worker (it holds
the real Docker socket, so nothing would be gained by withholding anything from it);
behind the filter the worker has these directories read-only and the filter does it. One
code path decides (``perform``): the operation is tried here, and when the file system
says no (read-only, another mount, no permission) askbox docker-filter is asked to run the
very same function (``POST /askbox/<action>`` on the Docker socket).

Below a root every directory is opened one at a time with O_NOFOLLOW, so a symlink the
worker plants in its staging area is never followed; a build is checked to be a real
directory in ``sealed/.incoming`` (bound by nothing) before it takes a bindable name.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sandbox.users import PROXY_UID

STAGING, SEALED = "staging", "sealed"
_INCOMING, _TRASH = ".incoming", ".trash"  # under sealed/: what is on its way in or out
RUNS = "runs"
SOCKET_NAME = "proxy.sock"
EGRESS_MOUNT_POINT = "/run/askbox-egress"  # where a proxy sees its <root>/<proxy>

# Names, as the worker makes them (jobs/repos/snapshot.py, sandbox/egress.py). None starts
# with ".", so nothing the sealing party keeps for itself can be named.
SLUG = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,79}")  # RepoRef.slug
SNAPSHOT = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?-[0-9a-f]{8}")  # <commit>-<variant>
BUILD = re.compile(r"\.tmp-[A-Za-z0-9_]{1,64}")  # tempfile.mkdtemp(prefix=".tmp-")
PROXY = re.compile(r"[0-9a-f]{12}")  # the proxy's digest, shortened
RUN = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # SandboxSpec.run_id

# What the file system says when this process may not do it: the filter's job then.
DELEGATED = frozenset({errno.EROFS, errno.EXDEV, errno.EACCES, errno.EPERM})
_STALE = 3600.0  # seconds after which a leftover in .incoming/.trash (a crash) is removed

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class BadName(ValueError):
    """A name that is not one askbox makes."""


class Unsealable(ValueError):
    """What was to be sealed is not a real directory."""


def _check(pattern: re.Pattern[str], value: object, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value) or value in {".", ".."}:
        raise BadName(f"{what} {str(value)[:80]!r} is not a name askbox makes")
    return value


@contextmanager
def _opened(path: Path | str) -> Iterator[int]:
    """The directory ``path`` (absolute), reached from / without following any symlink."""
    fd = os.open("/", _DIR)
    try:
        for part in Path(path).parts[1:]:
            inner = os.open(part, _DIR, dir_fd=fd)
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def check_no_symlink(path: str) -> None:
    """Raises OSError unless every component of the absolute ``path`` is a directory
    reached without a symlink (ELOOP/ENOTDIR: a symlink or a file on the way)."""
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in Path(path).parts[1:]:
            inner = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


@contextmanager
def _child(parent: int, name: str, create: bool = False) -> Iterator[int]:
    """The directory ``name`` in ``parent`` (made 0755 first when ``create``)."""
    made = False
    if create:
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
            made = True
        except FileExistsError:
            pass
    fd = os.open(name, _DIR, dir_fd=parent)
    try:
        if made:
            os.fchmod(fd, 0o755)  # whatever the umask
        yield fd
    finally:
        os.close(fd)


def _sweep(parent: int) -> None:
    """Leftovers of a crash in .incoming or .trash, once they are old."""
    now = time.time()
    for entry in os.listdir(parent):
        try:
            if now - os.stat(entry, dir_fd=parent, follow_symlinks=False).st_mtime > _STALE:
                _drop(parent, entry)
        except FileNotFoundError:
            continue


def _drop(parent: int, name: str) -> None:
    if stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
        shutil.rmtree(name, dir_fd=parent)  # fd-based: follows no symlink inside
    else:
        os.unlink(name, dir_fd=parent)


# -- snapshots ------------------------------------------------------------------------


def seal_snapshot(root: Path, slug: str, build: str, name: str) -> None:
    """Move the finished build ``staging/<slug>/<build>`` to ``sealed/<slug>/<name>``.

    It goes through ``sealed/.incoming`` first, and takes its bindable name only once it
    is known to be a real directory there, where the worker cannot reach: a build swapped
    for a symlink at the last moment is removed, and is not at a bindable path for even an
    instant. When ``name`` is there already (another question sealed the same commit
    first), the build is dropped: either way it is gone from staging afterwards."""
    _check(SLUG, slug, "slug")
    _check(BUILD, build, "build")
    _check(SNAPSHOT, name, "snapshot")
    with (
        _opened(root) as top,
        _child(top, STAGING) as staging,
        _child(staging, slug) as source,
        _child(top, SEALED, create=True) as sealed,
        _child(sealed, _INCOMING, create=True) as incoming,
        _child(sealed, slug, create=True) as target,
    ):
        parked = f"{name}.{secrets.token_hex(6)}"
        os.rename(build, parked, src_dir_fd=source, dst_dir_fd=incoming)
        if not stat.S_ISDIR(os.stat(parked, dir_fd=incoming, follow_symlinks=False).st_mode):
            os.unlink(parked, dir_fd=incoming)
            raise Unsealable(f"{slug}/{build} is not a directory: not sealed")
        try:
            os.rename(parked, name, src_dir_fd=incoming, dst_dir_fd=target)
        except OSError as exc:
            shutil.rmtree(parked, dir_fd=incoming, ignore_errors=True)
            if exc.errno not in {errno.EEXIST, errno.ENOTEMPTY}:
                raise
        _sweep(incoming)


def remove_snapshot(root: Path, slug: str, name: str) -> None:
    """Remove the sealed snapshot ``sealed/<slug>/<name>`` (nothing if it is gone).

    The caller holds the snapshot's lock (jobs/repos/snapshot.py): the lock keeps the
    worker's own questions and cleanup apart, and is no boundary (whoever may ask this may
    also stop the sandboxes reading it), so the sealing party does not take it again."""
    _check(SLUG, slug, "slug")
    _check(SNAPSHOT, name, "snapshot")
    with _opened(root) as top:
        try:
            with (
                _child(top, SEALED) as sealed,
                _child(sealed, slug) as source,
                _child(sealed, _TRASH, create=True) as trash,
            ):
                parked = f"{name}.{secrets.token_hex(6)}"
                try:
                    # renamed first: a half-removed snapshot is never mistaken for a whole one
                    os.rename(name, parked, src_dir_fd=source, dst_dir_fd=trash)
                except FileNotFoundError:
                    return
                _drop(trash, parked)
                _sweep(trash)
        except FileNotFoundError:
            return


# -- egress sockets -------------------------------------------------------------------


def make_egress_dir(root: Path, proxy: str, run: str | None = None) -> None:
    """``<root>/<proxy>/runs/`` and, with ``run``, ``runs/run-<run>/``, the one directory
    the proxy's uid may write (it opens the run's socket there)."""
    _check(PROXY, proxy, "egress proxy")
    if run is not None:
        _check(RUN, run, "run id")
    with (
        _opened(root) as top,
        _child(top, proxy, create=True) as directory,
        _child(directory, RUNS, create=True) as runs,
    ):
        if run is not None:
            with _child(runs, f"run-{run}", create=True) as run_dir:
                os.fchown(run_dir, PROXY_UID, PROXY_UID)


def remove_egress_dir(root: Path, proxy: str, run: str | None = None) -> None:
    """Remove ``<root>/<proxy>`` (a proxy is gone) or one run's directory in it (a run
    ended: its listener in the proxy stops within 2 s); nothing if it is gone."""
    _check(PROXY, proxy, "egress proxy")
    if run is not None:
        _check(RUN, run, "run id")
    with _opened(root) as top:
        try:
            if run is None:
                _drop(top, proxy)
                return
            with _child(top, proxy) as directory, _child(directory, RUNS) as runs:
                _drop(runs, f"run-{run}")
        except FileNotFoundError:
            return


# -- here, or by the filter -----------------------------------------------------------

ACTIONS: dict[str, tuple[Callable[..., None], tuple[str, ...]]] = {
    # action: (function, its fields besides the root); the filter serves exactly these
    "snapshots/seal": (seal_snapshot, ("slug", "build", "name")),
    "snapshots/remove": (remove_snapshot, ("slug", "name")),
    "egress/make": (make_egress_dir, ("proxy", "run")),
    "egress/remove": (remove_egress_dir, ("proxy", "run")),
}


def perform(action: str, root: Path, **fields: str | None) -> None:
    """Run ``action`` on ``root`` here; when this process may not (the file system says
    EROFS, EXDEV, EACCES or EPERM), ask askbox docker-filter to run it. Any other error,
    and the filter's refusal, is raised."""
    function, _names = ACTIONS[action]
    try:
        function(root, **fields)
    except OSError as exc:
        if exc.errno not in DELEGATED:
            raise
        from sandbox.docker_filter.client import ask_filter

        ask_filter(action, {"root": str(root), **fields}, because=exc)
