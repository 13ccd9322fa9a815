"""Read-only snapshots of one commit's tree, shared by the questions pinned to it.

``<snapshots>/sealed/<slug>/<commit>-<variant>/`` is what a sandbox mounts at /workspace:
the commit's files minus the denylist (``variant`` hashes the denylist and ``history``, so
two configurations never share one), dirs 0755 and files 0644 (0755 if executable) so the
sandbox user can read them whoever owns them. A repository's snapshots hard-link the
files they share (``.blobs``): a new commit costs its directories and changed files. No ``.git`` unless the repository has
``history: true``: then a bare repository holding the pinned commit's history only, with
no remote, no config of the source's and no later commits.

The worker builds in ``<snapshots>/staging/<slug>/`` (its own: the ``.blobs`` store, the
builds, the lock files); a finished snapshot is *sealed*, moved to ``sealed/``, which only
the sealing party may change, so that nothing a sandbox binds can be replaced by the
worker between askbox docker-filter's check and the container's start. Behind the filter
the worker has ``sealed/`` read-only and the filter seals and removes (sandbox/owned_dirs.py:
``perform`` tries here first, then asks the filter).

The tree is written from ``git ls-tree`` and ``git cat-file --batch`` rather than ``git
archive``/``checkout-index``: those run the smudge filters of the source's config
(``filter.*.smudge``, a command), and a directory a user names may be anyone's. Written
in a temporary directory in staging and sealed (renamed) into place, so a snapshot is
whole or absent.

Each use holds a shared ``flock`` on ``staging/<slug>/<commit>-<variant>.lock`` (its mtime
is the last use); the cleanup removes a snapshot unused for longer than allowed only when
it gets the exclusive lock without waiting, i.e. when no question is reading it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs import spawning
from jobs.repos.denylist import denied
from jobs.repos.git import base_env, git_argv, git_records, run_git
from jobs.repos.locks import WouldBlock, locked
from jobs.repos.resolve import RepoRef
from sandbox import owned_dirs
from sandbox.owned_dirs import SEALED, STAGING
from sandbox.spec import SANDBOX_USER

SANDBOX_UID = int(SANDBOX_USER.partition(":")[0])
_BLOB_MODES = {"100644": 0o644, "100755": 0o755}
# Per repository, in its staging directory: the files its snapshots share, hard-linked
# into each, and the lock that keeps the sweep of unused ones away from a snapshot being
# made. Neither ends in ".lock": the cleanup takes "<commit>-<variant>.lock" files.
BLOBS, BLOBS_LOCK = ".blobs", ".blobs-lock"


class Snapshots:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging = root / STAGING
        self.sealed = root / SEALED

    def path_of(self, repo: RepoRef, commit: str) -> Path:
        variant = hashlib.sha256(repr((repo.deny, repo.history)).encode()).hexdigest()[:8]
        return self.sealed / repo.slug / f"{commit}-{variant}"

    @contextmanager
    def lease(self, repo: RepoRef, git_dir: Path, commit: str) -> Iterator[Path]:
        """The snapshot of ``commit`` (made from ``git_dir`` if missing), kept while held."""
        tree = self.path_of(repo, commit)
        work = self.staging / repo.slug
        work.mkdir(parents=True, exist_ok=True)
        lock = work / f"{tree.name}.lock"
        with locked(lock, exclusive=False):
            os.utime(lock)
            if not tree.is_dir():
                self._create(repo, git_dir, commit, tree)
            yield tree
            os.utime(lock)

    def cleanup(self, idle: float) -> list[Path]:
        """Remove snapshots no question has used for ``idle`` seconds; returns them."""
        removed: list[Path] = []
        now = time.time()
        for lock in self.staging.glob("*/*.lock"):
            try:
                if now - lock.stat().st_mtime < idle:
                    continue
                with locked(lock, exclusive=True, blocking=False):
                    if now - lock.stat().st_mtime < idle:
                        continue  # used again while we looked
                    tree = self.sealed / lock.parent.name / lock.name.removesuffix(".lock")
                    if tree.is_dir():
                        owned_dirs.perform("snapshots/remove", self.root, slug=lock.parent.name, name=tree.name)
                        removed.append(tree)
                    lock.unlink()
            except (WouldBlock, FileNotFoundError):
                continue  # in use, or another cleanup took it
        for blobs in self.staging.glob(f"*/{BLOBS}"):
            try:
                with locked(blobs.parent / BLOBS_LOCK, exclusive=True, blocking=False):
                    for blob in os.scandir(blobs):
                        if blob.stat(follow_symlinks=False).st_nlink == 1:  # in no snapshot any more
                            os.unlink(blob.path)
            except (WouldBlock, FileNotFoundError):
                continue  # a snapshot is being made: next round
        for tmp in self.staging.glob("*/.tmp-*"):  # left by a crash mid-creation
            try:
                if now - tmp.stat().st_mtime > max(idle, 3600):
                    _remove(tmp)
            except FileNotFoundError:
                pass
        return removed

    def _create(self, repo: RepoRef, git_dir: Path, commit: str, tree: Path) -> None:
        work = self.staging / repo.slug
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=work))
        blobs = work / BLOBS
        try:
            blobs.mkdir(exist_ok=True)
            with locked(work / BLOBS_LOCK, exclusive=False):  # no sweep while we link
                write_tree(git_dir, commit, tmp, repo.deny, blobs)
            if repo.history:
                _history(git_dir, commit, tmp / ".git", repo.deny)
                if os.geteuid() == 0:  # git checks the work tree's owner too
                    os.chown(tmp, SANDBOX_UID, SANDBOX_UID)
            tmp.chmod(0o755)
            # Into sealed/ (or dropped, when a concurrent question sealed the same one first).
            owned_dirs.perform("snapshots/seal", self.root, slug=repo.slug, build=tmp.name, name=tree.name)
        except BaseException:
            if tmp.exists():
                _remove(tmp)
            raise


def _remove(path: Path) -> None:
    # Renamed first: a half-removed snapshot is never mistaken for a whole one.
    aside = path.with_name(f".rm-{path.name}-{os.getpid()}-{threading.get_ident()}")
    path.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


def write_tree(git_dir: Path, commit: str, dest: Path, deny: tuple[str, ...], blobs: Path | None = None) -> int:
    """The files of ``commit`` into the empty directory ``dest``, minus ``deny``; returns
    how many were written. With ``blobs`` (a directory of files named ``<object id>.<mode>``),
    a file already there is hard-linked instead of written, and a new one is added: the
    snapshots of one repository share every file their commits share."""
    listing = run_git(["--git-dir", str(git_dir), "ls-tree", "-r", "-z", "--full-tree", commit]).stdout
    entries: list[tuple[str, str, str]] = []  # (mode, object id, path)
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, kind, oid = meta.decode().split()
        path = raw_path.decode("utf-8", errors="surrogateescape")
        if kind != "blob" or not _safe(path) or denied(path, deny):
            continue  # submodules ("commit") have no content here
        entries.append((mode, oid, path))
    made: set[str] = {""}
    base = os.fspath(dest)

    def ensure_dir(rel: str) -> None:
        if rel in made:
            return
        parent = rel.rpartition("/")[0]
        ensure_dir(parent)
        # mkdir, never makedirs: a name that is already a symlink or file fails here
        # instead of being followed out of the snapshot.
        os.mkdir(f"{base}/{rel}", 0o755)
        os.chmod(f"{base}/{rel}", 0o755)  # whatever the umask
        made.add(rel)

    if blobs is not None:
        entries = [entry for entry in entries if not _linked(entry, blobs, base, ensure_dir)]

    cat = spawning.start(
        [*git_argv(), "--git-dir", str(git_dir), "cat-file", "--batch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=base_env(),
    )
    assert cat.stdin is not None and cat.stdout is not None

    def feed() -> None:  # in a thread: a full pipe each way would otherwise deadlock
        try:
            for _, oid, _ in entries:
                cat.stdin.write(f"{oid}\n".encode())  # type: ignore[union-attr]
            cat.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    written = 0
    try:
        for mode, oid, path in entries:
            header = cat.stdout.readline().split()
            if len(header) != 3 or header[1] != b"blob":
                raise RuntimeError(f"git cat-file: no blob {oid} for {path}")
            data = cat.stdout.read(int(header[2]))
            cat.stdout.read(1)  # the newline after each object
            parent, _, _ = path.rpartition("/")
            try:
                ensure_dir(parent)
                target = f"{base}/{path}"
                if mode == "120000":
                    os.symlink(os.fsdecode(data), target)
                else:
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                    try:
                        view = memoryview(data)
                        while view:
                            view = view[os.write(fd, view) :]
                        os.fchmod(fd, _BLOB_MODES.get(mode, 0o644))  # whatever the umask
                    finally:
                        os.close(fd)
                    if blobs is not None:
                        try:
                            os.link(target, f"{blobs}/{oid}.{mode}")
                        except FileExistsError:
                            pass  # a concurrent snapshot stored it first
                written += 1
            except (FileExistsError, NotADirectoryError):
                continue  # a path clashing with a symlink or file: a crafted tree, skipped
    finally:
        feeder.join(timeout=5)
        cat.stdout.close()
        cat.wait(timeout=30)
    return written


def _linked(entry: tuple[str, str, str], blobs: Path, base: str, ensure_dir: Callable[[str], None]) -> bool:
    """Whether the entry's file is now a hard link to the blob store's copy."""
    mode, oid, path = entry
    if mode == "120000":
        return False  # symlinks are written (they are tiny)
    try:
        ensure_dir(path.rpartition("/")[0])
        os.link(f"{blobs}/{oid}.{mode}", f"{base}/{path}")
        return True
    except FileNotFoundError:
        return False  # not stored yet: written, then stored
    except (FileExistsError, NotADirectoryError):
        return True  # a path clashing with a symlink or file: a crafted tree, skipped


def _safe(path: str) -> bool:
    parts = path.split("/")
    return all(p not in ("", ".", "..") and p.lower() != ".git" for p in parts)


class DeniedInHistory(Exception):
    """``history: true`` refused: the pinned commit's history holds a denied path."""

    def __init__(self, path: str, commit: str, more: int) -> None:
        super().__init__(
            f"its history holds {path!r} (commit {commit[:12]})"
            + (f" and {more} more denied path{'s' * (more > 1)}" if more else "")
        )
        self.path, self.commit, self.more = path, commit, more


def _history(source: Path, commit: str, dest: Path, deny: tuple[str, ...]) -> None:
    """A bare repository of ``commit``'s history only: no remote, no source config.

    Made from the destination's side (``git --git-dir DEST fetch SOURCE commit``), so no
    git runs in ``source`` reading its config (``source`` is a mirror or an object view
    of askbox's own anyway). Refused with ``DeniedInHistory`` when any commit of that
    history holds a denied path: ``git show <commit>:.env`` would print what the tree
    leaves out. Refused rather than rewritten: a rewrite costs a pass over every blob of
    the history and gives commits other ids than the ones the answer and its links name;
    the check is one pass over the names of the paths each commit changed."""
    found = denied_in_history(source, commit, deny)
    if found is not None:
        raise found
    run_git(["init", "--quiet", "--bare", "--template=", str(dest)])  # no template: no sample hooks
    run_git(
        [
            "--git-dir",
            str(dest),
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--",
            str(source),
            f"{commit}:refs/heads/askbox",
        ],
        timeout=600,
    )
    run_git(["--git-dir", str(dest), "symbolic-ref", "HEAD", "refs/heads/askbox"])
    owner = SANDBOX_UID if os.geteuid() == 0 else -1  # git refuses a repository of another owner
    for directory, _dirs, files in os.walk(dest):
        os.chmod(directory, 0o755)
        os.chown(directory, owner, owner)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
            os.chown(os.path.join(directory, name), owner, owner)


def denied_in_history(git_dir: Path, commit: str, deny: tuple[str, ...]) -> DeniedInHistory | None:
    """The newest denied path any commit reachable from ``commit`` holds, or None.

    Every path a history holds was added or changed by one of its commits (a merge's
    additions show against its first parent), so ``git log --name-only`` without
    deletions lists them all; each name is matched once."""
    seen: dict[str, str] = {}  # path -> the newest commit that holds it
    current, header, first = "", True, False
    # "%x00%H": an empty record before each commit id (a path is never empty); the first
    # path after it starts with the newline that ends the header.
    for record in git_records(
        [
            "--git-dir",
            str(git_dir),
            "log",
            "--format=%x00%H",
            "--name-only",
            "-z",
            "--no-renames",
            "--diff-merges=first-parent",
            "--diff-filter=d",
            commit,
            "--",
        ]
    ):
        if not record:
            header = True
            continue
        if header:
            current, header, first = record.decode(), False, True
            continue
        if first:
            record, first = record.removeprefix(b"\n"), False
        seen.setdefault(record.decode("utf-8", errors="surrogateescape"), current)
    hits = [(path, sha) for path, sha in seen.items() if denied(path, deny)]
    if not hits:
        return None
    path, sha = hits[0]
    return DeniedInHistory(path, sha, len(hits) - 1)
