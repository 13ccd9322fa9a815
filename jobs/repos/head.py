"""The commit a local checkout has checked out (HEAD), read from its files.

Read from the files rather than by running git: no dependency on a git binary for this,
no "dubious ownership" refusal for checkouts owned by another user, and nothing from the
repository's own config gets executed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

_OBJECT_ID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # SHA-1 or SHA-256
# Refs that live in each worktree's own git dir; all others are in the common dir.
_PER_WORKTREE = ("refs/bisect/", "refs/worktree/", "refs/rewritten/")
_MAX_SYMREF_DEPTH = 5


def head_commit(path: Path) -> str | None:
    """The commit checked out at `path`, or None when it is not a git checkout."""
    try:
        git_dir = _git_dir(Path(path))
        if git_dir is None:
            return None
        common_dir = _common_dir(git_dir)
        if (common_dir / "reftable").is_dir():
            # The reftable format (git >= 2.45) is binary; leave it to git itself.
            return _head_from_git(Path(path))
        return _resolve_head(git_dir, common_dir)
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _git_dir(checkout: Path) -> Path | None:
    dotgit = checkout / ".git"
    if dotgit.is_dir():
        return dotgit
    if dotgit.is_file():
        # Worktrees and submodules: `.git` is a file saying "gitdir: <path>".
        content = dotgit.read_text(encoding="utf-8").strip()
        if not content.startswith("gitdir:"):
            return None
        target = Path(content[len("gitdir:") :].strip())
        if not target.is_absolute():
            target = checkout / target
        return target if target.is_dir() else None
    return None


def _common_dir(git_dir: Path) -> Path:
    commondir = git_dir / "commondir"
    if not commondir.is_file():
        return git_dir
    target = Path(commondir.read_text(encoding="utf-8").strip())
    return target if target.is_absolute() else git_dir / target


def _resolve_head(git_dir: Path, common_dir: Path) -> str | None:
    value = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
    for _ in range(_MAX_SYMREF_DEPTH):
        if _OBJECT_ID.match(value):
            return value  # detached HEAD, or the end of the ref chain
        if not value.startswith("ref:"):
            return None
        ref = value[len("ref:") :].strip()
        if not ref.startswith("refs/") or ".." in ref.split("/"):
            return None  # never read outside the git dir
        base = git_dir if ref.startswith(_PER_WORKTREE) else common_dir
        loose = base / ref
        if loose.is_file():
            value = loose.read_text(encoding="utf-8").strip()
            continue
        # No loose file: the ref is packed, or the branch has no commit yet (None).
        return _packed_ref(common_dir, ref)
    return None


def _packed_ref(common_dir: Path, ref: str) -> str | None:
    packed = common_dir / "packed-refs"
    if not packed.is_file():
        return None
    for line in packed.read_text(encoding="utf-8").splitlines():
        # "# pack-refs with: ..." header and "^<id>" peeled-tag lines are not refs.
        if not line or line[0] in "#^":
            continue
        object_id, _, name = line.partition(" ")
        if name == ref and _OBJECT_ID.match(object_id):
            return object_id
    return None


def _head_from_git(checkout: Path) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        result = subprocess.run(
            # safe.directory: the checkout is often owned by another user than the worker.
            [git, "-c", "safe.directory=*", "-C", str(checkout), "rev-parse", "--verify", "--quiet", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = result.stdout.strip()
    return value if result.returncode == 0 and _OBJECT_ID.match(value) else None


def object_store(checkout: Path) -> Path | None:
    """The git directory holding the checkout's objects (a worktree's common dir), or None."""
    try:
        git_dir = _git_dir(Path(checkout))
        return None if git_dir is None else _common_dir(git_dir)
    except (OSError, UnicodeDecodeError):
        return None
