"""A local checkout read as data: its git directory found inside it, its objects read
through a repository of askbox's own.

A checkout configured as a path belongs to whoever can write it, and so does everything
its ``.git`` says. Two rules keep it from reaching beyond itself or running anything:

- What git data askbox reads is inside the checkout: ``.git`` (a directory, or a file
  saying ``gitdir: …``), a worktree's ``commondir``, the object store and its alternates
  must all resolve (symlinks followed) to paths inside it. A ``.git`` pointing elsewhere
  (a linked worktree or a submodule, or one made to point at another repository's
  mirror, whose HEAD would pin a commit of a repository another channel may not see) is
  refused with ``OutsideCheckout``.
- git never opens it as a repository, which would read its config (hooks, fsmonitor, a
  partial clone's promisor remote, ...). Its HEAD is read from its files
  (jobs/repos/head.py); its objects through an *object view*, an empty bare repository of
  askbox's own whose one alternate is the checkout's object store (alternates are object
  directories: git reads no config, hook or ref of theirs); ``remote.origin.url`` (for
  citations) with ``git config --file``, which reads that one file as data, includes not
  followed. The one exception: the HEAD of a reftable checkout (binary refs), resolved by
  ``git rev-parse`` with every command-running key overridden (jobs/repos/git.py).

A local owner racing askbox (swapping a directory for a symlink between the check and
git's read) is not covered: the checks are made when the question is pinned and again
when its view is made.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs.repos.git import GitFailed, run_git

_MAX_ALTERNATE_DEPTH = 5  # git's own limit


class OutsideCheckout(Exception):
    """A checkout's git data lies outside it; the message says what and where."""


def git_dir(checkout: Path) -> Path | None:
    """The checkout's own git directory (``.git``, or where its ``.git`` file points),
    resolved and inside it; None when ``checkout`` is no git checkout."""
    dotgit = checkout / ".git"
    if dotgit.is_dir():
        return inside(dotgit, checkout, ".git")
    if not dotgit.is_file():
        return None
    # Worktrees and submodules: `.git` is a file saying "gitdir: <path>".
    content = dotgit.read_text(encoding="utf-8").strip()
    if not content.startswith("gitdir:"):
        return None
    target = Path(content[len("gitdir:") :].strip())
    if not target.is_absolute():
        target = checkout / target
    if not target.is_dir():
        return None
    return inside(
        target,
        checkout,
        "git directory (from its .git file)",
        "; a linked worktree or a submodule keeps its git directory elsewhere: configure the main checkout",
    )


def common_dir(gitdir: Path, checkout: Path) -> Path:
    """Where a worktree's shared refs and objects are (``commondir``), inside the checkout."""
    commondir = gitdir / "commondir"
    if not commondir.is_file():
        return gitdir
    target = Path(commondir.read_text(encoding="utf-8").strip())
    return inside(target if target.is_absolute() else gitdir / target, checkout, "git common directory")


def object_store(checkout: Path) -> Path | None:
    """The checkout's object directory, checked to be inside it with all its alternates;
    None when it is no checkout. Raises ``OutsideCheckout``."""
    try:
        gitdir = git_dir(checkout)
        if gitdir is None:
            return None
        objects = inside(common_dir(gitdir, checkout) / "objects", checkout, "object store")
        _check_alternates(objects, checkout, 0)
        return objects if objects.is_dir() else None
    except (OSError, UnicodeDecodeError):
        return None


def _check_alternates(objects: Path, checkout: Path, depth: int) -> None:
    listing = objects / "info" / "alternates"
    if not listing.is_file():
        return
    if depth >= _MAX_ALTERNATE_DEPTH:
        raise OutsideCheckout(f"its object store {objects} has alternates nested deeper than git reads")
    for line in listing.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith('"'):
            raise OutsideCheckout(f"its object store {objects} names a quoted alternate, which askbox does not read")
        alternate = Path(line) if os.path.isabs(line) else objects / line
        _check_alternates(inside(alternate, checkout, "alternate object store"), checkout, depth + 1)


def inside(path: Path, checkout: Path, what: str, hint: str = "") -> Path:
    """``path`` resolved (symlinks followed); raises ``OutsideCheckout`` unless it is in ``checkout``."""
    real = Path(os.path.realpath(path))
    top = Path(os.path.realpath(checkout))
    if real != top and top not in real.parents:
        raise OutsideCheckout(f"its {what} is {real}, outside the checkout {top}{hint}")
    return real


@contextmanager
def objects_view(checkout: Path, objects: Path) -> Iterator[Path]:
    """A bare repository of askbox's own reading ``objects`` (the checkout's object store,
    checked again now) as its alternate: git run in it reads the checkout's objects and
    nothing else of the checkout. Removed when the context ends."""
    if object_store(checkout) != objects:
        raise OutsideCheckout(f"its object store moved from {objects} since the question was pinned")
    if "\n" in str(objects):
        raise OutsideCheckout(f"its object store {objects!r} has a path git cannot name as an alternate")
    with tempfile.TemporaryDirectory(prefix="askbox-objects-") as tmp:
        view = Path(tmp) / "view.git"
        # The checkout's object format (sha1, or sha256), or its objects would not read.
        object_format = _config_value(checkout, "extensions.objectFormat") or "sha1"
        run_git(["init", "--quiet", "--bare", "--template=", f"--object-format={object_format}", str(view)])
        info = view / "objects" / "info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "alternates").write_text(f"{objects}\n", encoding="utf-8")
        yield view


def origin_url(checkout: Path) -> str | None:
    """``remote.origin.url`` of a checkout's own config, read as data, or None."""
    return _config_value(checkout, "remote.origin.url")


def _config_value(checkout: Path, key: str) -> str | None:
    """``key`` of the checkout's config file, read as data (``--file``: its includes are
    not followed, nothing else is read), or None."""
    try:
        gitdir = git_dir(checkout)
        if gitdir is None:
            return None
        config = inside(common_dir(gitdir, checkout) / "config", checkout, "config")
        if not config.is_file():
            return None
        value = run_git(["config", "--file", str(config), "--get", key], timeout=10).stdout
    except (OSError, UnicodeDecodeError, OutsideCheckout, GitFailed):
        return None
    return value.decode(errors="replace").strip() or None
