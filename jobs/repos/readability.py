"""Whether the sandbox user can read a directory that is mounted as it is, and what it must not see.

A directory that is not a git checkout is mounted live (there is no commit to snapshot).
Before that: the sandbox user (uid 10001, in no group of the host's) must be able to read
it, or the agent fails deep inside with a stack trace; we say so up front, naming the
path, its mode and the fix. And what the denylist names is listed, for the sandbox to
mask (an empty read-only file or directory over each).

Decided from the mode bits (owner, group, other as they apply to uid/gid 10001), not by
trying: the worker is often root, which reads everything.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from jobs.repos.denylist import denied
from sandbox.spec import SANDBOX_USER

_UID, _, _GID = SANDBOX_USER.partition(":")
UID, GID = int(_UID), int(_GID or _UID)
MAX_MASKS = 200  # each is a mount; more than this and the directory should be a git checkout


class Unreadable(Exception):
    """The sandbox user cannot read the directory; the message says what to do."""


class LiveTree(BaseModel):
    """A directory to mount as it is: what to mask in it (paths relative to it)."""

    model_config = ConfigDict(frozen=True)

    root: Path
    masked_files: tuple[str, ...] = ()
    masked_dirs: tuple[str, ...] = ()


def _can_read(st: os.stat_result, directory: bool) -> bool:
    if st.st_uid == UID:
        bits = (stat.S_IRUSR, stat.S_IXUSR)
    elif st.st_gid == GID:
        bits = (stat.S_IRGRP, stat.S_IXGRP)
    else:
        bits = (stat.S_IROTH, stat.S_IXOTH)
    need = bits if directory else bits[:1]
    return all(st.st_mode & b for b in need)


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _describe(path: Path, st: os.stat_result) -> str:
    return f"{path} (mode {stat.S_IMODE(st.st_mode):04o}, owner {_owner(st.st_uid)})"


def live_tree(root: Path, deny: tuple[str, ...]) -> LiveTree:
    """Check ``root`` and everything under it; raises ``Unreadable`` with one clear message."""
    st = os.stat(root)
    if not _can_read(st, directory=True):
        raise Unreadable(
            f"The sandbox user (uid {UID}) cannot read the repository directory {_describe(root, st)}. "
            f"Make it readable: `chmod o+rx {root}` (and `chmod -R o+rX {root}` for what is inside)."
        )
    files: list[str] = []
    dirs: list[str] = []
    unreadable: list[str] = []
    for directory, subdirs, names in os.walk(root, onerror=lambda exc: unreadable.append(str(exc.filename))):
        rel_dir = os.path.relpath(directory, root)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        keep = []
        for name in subdirs:
            rel = rel_dir + name
            full = Path(directory, name)
            if denied(rel, deny, directory=True):
                if not full.is_symlink():
                    dirs.append(rel)
                continue  # masked: its contents do not matter
            if not _can_read(full.lstat(), directory=True) and not full.is_symlink():
                unreadable.append(str(full))
            keep.append(name)
        subdirs[:] = keep
        for name in names:
            rel = rel_dir + name
            full = Path(directory, name)
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                continue  # followed inside the sandbox, where it can only reach the mount
            if denied(rel, deny):
                files.append(rel)
            elif not _can_read(st, directory=False):
                unreadable.append(str(full))
    if unreadable:
        first = Path(unreadable[0])
        try:
            what = _describe(first, first.lstat())
        except OSError:
            what = str(first)
        more = f" and {len(unreadable) - 1} more" if len(unreadable) > 1 else ""
        raise Unreadable(
            f"The sandbox user (uid {UID}) cannot read {what}{more} in the repository {root}. "
            f"Make them readable: `chmod -R o+rX {root}`."
        )
    if len(files) + len(dirs) > MAX_MASKS:
        raise Unreadable(
            f"{root} holds {len(files) + len(dirs)} files matching the secrets denylist, more than "
            f"{MAX_MASKS} can be hidden from a live directory: make it a git checkout (then askbox "
            "snapshots its commit without them) or move them out."
        )
    return LiveTree(root=root, masked_files=tuple(sorted(files)), masked_dirs=tuple(sorted(dirs)))
