"""A bare mirror of one git remote on this worker host, fetched when it is older than allowed.

``<mirrors>/<slug>.git`` holds the branch's tip in ``refs/askbox/tip`` (the branch asked
for, or the remote's HEAD). The slug names the repository, its URL and branch
(jobs/repos/resolve.py): a mirror is of one remote only, and one that no configured
repository uses any more is swept by the refresher (``sweep_mirrors``). The remote's URL
is not in the mirror's config: every fetch names it, so nothing but the commit graph is
stored. Next to it, ``<slug>.json`` records
the last good fetch and the last failure, and ``<slug>.lock`` makes one fetch at a time
per host: a question that waited for another's fetch uses its result, fetching once.

A failed fetch keeps the last good tip: questions are then answered from it, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from jobs.repos.git import GitFailed, remote_env, run_git
from jobs.repos.locks import WouldBlock, locked
from jobs.repos.resolve import RepoRef

TIP = "refs/askbox/tip"


class MirrorState(BaseModel):
    """What the last fetches left: the commit to answer from, and how fresh it is."""

    model_config = ConfigDict(frozen=True)

    commit: str | None = None  # the tip of the last good fetch
    fetched_at: float | None = None  # when it succeeded (time.time())
    attempted_at: float | None = None  # the last fetch, good or not
    error: str | None = None  # why the last fetch failed, when it did

    def age(self, now: float | None = None) -> float | None:
        return None if self.fetched_at is None else (now or time.time()) - self.fetched_at


class Mirror:
    def __init__(self, repo: RepoRef, root: Path, timeout: float = 120) -> None:
        assert repo.url is not None, "a mirror is of a git remote"
        self.repo = repo
        self.root = root
        self.path = root / f"{repo.slug}.git"
        self.state_file = root / f"{repo.slug}.json"
        self.lock_file = root / f"{repo.slug}.lock"
        self.timeout = timeout

    def state(self) -> MirrorState:
        try:
            return MirrorState.model_validate_json(self.state_file.read_text())
        except (OSError, ValueError):
            return MirrorState()

    def refresh(self, max_age: float) -> MirrorState:
        """The mirror's state, fetched first when the last fetch is older than ``max_age``
        seconds (0: always) and none ended while we waited for the lock."""
        asked = time.time()
        self.root.mkdir(parents=True, exist_ok=True)
        with locked(self.lock_file):
            state = self.state()
            if state.attempted_at is not None and state.attempted_at >= asked:
                return state  # someone fetched while we waited: once is enough
            if state.attempted_at is not None and time.time() - state.attempted_at < max_age:
                # Fresh, or failed lately: a remote that is down is tried again once per
                # interval (by the refresher or a question), not by every question.
                return state
            return self._fetch(state)

    def _fetch(self, before: MirrorState) -> MirrorState:
        started = time.time()
        secrets = (self.repo.token.get_secret_value(),) if self.repo.token else ()
        try:
            if self.repo.token_env and self.repo.token is None:
                raise GitFailed(f"the token variable {self.repo.token_env} is not set on this worker")
            if not self.path.is_dir():
                self._create()
            source = f"refs/heads/{self.repo.branch}" if self.repo.branch else "HEAD"
            run_git(
                [
                    "--git-dir",
                    str(self.path),
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-write-fetch-head",
                    "--",
                    self.repo.url or "",
                    f"+{source}:{TIP}",
                ],
                env=remote_env(self.repo, self.root),
                timeout=self.timeout,
                secrets=secrets,
            )
            commit = (
                run_git(["--git-dir", str(self.path), "rev-parse", "--verify", "--quiet", f"{TIP}^{{commit}}"])
                .stdout.decode()
                .strip()
            )
            state = MirrorState(commit=commit, fetched_at=started, attempted_at=started)
        except GitFailed as exc:
            reason = str(exc)
            if self.repo.branch and "couldn't find remote ref" in reason:
                reason = f"the remote has no branch {self.repo.branch!r} (deleted or renamed?)"
            state = before.model_copy(update={"attempted_at": started, "error": reason})
        self._save(state)
        return state

    def _create(self) -> None:
        # Made aside and renamed into place: a crash mid-init leaves no half mirror.
        tmp = Path(tempfile.mkdtemp(prefix=".init-", dir=self.root))
        run_git(["init", "--quiet", "--bare", str(tmp)])
        # No `gc --auto` detached into the background from a question's fetch (it would outlive
        # the work-horse); a mirror only grows by what the branch gains.
        run_git(["--git-dir", str(tmp), "config", "gc.auto", "0"])
        tmp.rename(self.path)

    def _save(self, state: MirrorState) -> None:
        tmp = self.state_file.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(state.model_dump()))
        tmp.replace(self.state_file)


def sweep_mirrors(root: Path, kept: set[str], idle: float) -> list[Path]:
    """Remove the mirrors in ``root`` not named in ``kept`` whose last fetch (good or not)
    is older than ``idle`` seconds; returns them. A mirror of another worker's
    configuration is fetched by its refresher, so it never gets that old; one being
    fetched holds its lock and is left for the next round."""
    removed: list[Path] = []
    now = time.time()
    for mirror in root.glob("*.git"):
        if mirror.name in kept or not mirror.is_dir():
            continue
        slug = mirror.name.removesuffix(".git")
        state, lock = root / f"{slug}.json", root / f"{slug}.lock"
        try:
            with locked(lock, exclusive=True, blocking=False):
                last = state.stat().st_mtime if state.exists() else mirror.stat().st_mtime
                if now - last < idle:
                    continue
                aside = root / f".rm-{slug}-{os.getpid()}"  # renamed first: never half a mirror
                mirror.rename(aside)
                shutil.rmtree(aside, ignore_errors=True)
                state.unlink(missing_ok=True)
                removed.append(mirror)
            lock.unlink(missing_ok=True)
        except WouldBlock:
            continue
    return removed
