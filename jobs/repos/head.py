"""The commit a local checkout has checked out (HEAD), read from its files.

Read from the files rather than by running git: no "dubious ownership" refusal for
checkouts owned by another user, and nothing of the repository's own config is read. Its
git directory is the one jobs/repos/checkout.py finds inside it.
"""

from __future__ import annotations

import re
from pathlib import Path

from jobs.repos.checkout import common_dir, git_dir, inside
from jobs.repos.git import GitFailed, run_git

_OBJECT_ID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # SHA-1 or SHA-256
# Refs that live in each worktree's own git dir; all others are in the common dir.
_PER_WORKTREE = ("refs/bisect/", "refs/worktree/", "refs/rewritten/")
_MAX_SYMREF_DEPTH = 5


def head_commit(path: Path) -> str | None:
    """The commit checked out at `path`, or None when it is not a git checkout. Raises
    ``OutsideCheckout`` when its git directory lies outside it (jobs/repos/checkout.py)."""
    try:
        gitdir = git_dir(Path(path))
        if gitdir is None:
            return None
        common = common_dir(gitdir, Path(path))
        if (common / "reftable").is_dir():
            # The reftable format (git >= 2.45) is binary; leave it to git itself.
            return _head_from_git(Path(path))
        return _resolve_head(Path(path), gitdir, common)
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _resolve_head(checkout: Path, gitdir: Path, common: Path) -> str | None:
    # Every file read is checked to be in the checkout: a ref symlinked to another
    # repository's would pin (and name, in the answer's footer) that repository's commit.
    value = inside(gitdir / "HEAD", checkout, "HEAD").read_text(encoding="utf-8").strip()
    for _ in range(_MAX_SYMREF_DEPTH):
        if _OBJECT_ID.match(value):
            return value  # detached HEAD, or the end of the ref chain
        if not value.startswith("ref:"):
            return None
        ref = value[len("ref:") :].strip()
        if not ref.startswith("refs/") or ".." in ref.split("/"):
            return None  # never read outside the git dir
        base = gitdir if ref.startswith(_PER_WORKTREE) else common
        loose = base / ref
        if loose.is_file():
            value = inside(loose, checkout, ref).read_text(encoding="utf-8").strip()
            continue
        # No loose file: the ref is packed, or the branch has no commit yet (None).
        return _packed_ref(checkout, common, ref)
    return None


def _packed_ref(checkout: Path, common: Path, ref: str) -> str | None:
    packed = common / "packed-refs"
    if not packed.is_file():
        return None
    for line in inside(packed, checkout, "packed-refs").read_text(encoding="utf-8").splitlines():
        # "# pack-refs with: ..." header and "^<id>" peeled-tag lines are not refs.
        if not line or line[0] in "#^":
            continue
        object_id, _, name = line.partition(" ")
        if name == ref and _OBJECT_ID.match(object_id):
            return object_id
    return None


def _head_from_git(checkout: Path) -> str | None:
    # Named with --git-dir (no discovery, so no ownership check to waive) and run with
    # every command-running key overridden (jobs/repos/git.py).
    gitdir = git_dir(checkout)
    if gitdir is None:
        return None
    try:
        value = run_git(["--git-dir", str(gitdir), "rev-parse", "--verify", "--quiet", "HEAD"], timeout=10).stdout
    except GitFailed:
        return None
    head = value.decode(errors="replace").strip()
    return head if _OBJECT_ID.match(head) else None
