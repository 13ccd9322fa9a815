"""What one question's sandbox mounts: the repository pinned to one commit, made ready.

``pin`` (when a question starts) then ``mount`` (around the agent's run) are the one path
from a resolved repository to a mount, for the worker (jobs/job.py) and ``askbox ask
--inline`` alike (both through jobs/agent_runs.py):

- a git remote: its mirror fetched when older than ``ASKBOX_REPO_REFRESH`` (a failed fetch
  answers from the last good commit, with a notice; no commit at all is ``RepoUnavailable``),
  then a snapshot of its tip;
- a local git checkout: a snapshot of its HEAD commit (what is committed: uncommitted
  changes are not seen), its objects read through a view of askbox's own
  (jobs/repos/checkout.py: git never runs in the checkout, nor reads outside it);
- a local directory that is no checkout: mounted as it is, once the sandbox user is known
  to be able to read it, with the denylist masked.

The snapshot stays leased (held) until the context ends: a cleanup never removes it while
the agent reads it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from jobs.repos.checkout import OutsideCheckout, object_store, objects_view
from jobs.repos.git import GitFailed
from jobs.repos.head import head_commit
from jobs.repos.mirror import Mirror, MirrorState, sweep_mirrors
from jobs.repos.readability import LiveTree, Unreadable, live_tree
from jobs.repos.resolve import RepoRef
from jobs.repos.snapshot import DeniedInHistory, Snapshots
from sandbox.spec import Masks

log = logging.getLogger(__name__)


class RepoUnavailable(Exception):
    """The question cannot be answered from this repository; the message says why and what to do."""


class Pin(BaseModel):
    """A question's repository pinned to one commit when it starts (before any snapshot)."""

    model_config = ConfigDict(frozen=True)

    repo: RepoRef
    commit: str | None  # None for a directory that is no git checkout
    git_dir: Path | None = None  # a remote's mirror, where the commit's objects are
    objects: Path | None = None  # a local checkout's object store (read through a view)
    live: LiveTree | None = None  # a directory mounted as it is, with what to mask
    notice: str | None = None  # said with the answer: e.g. it comes from an older commit


class Workspace(BaseModel):
    """One question's view of its repository, while it is mounted."""

    model_config = ConfigDict(frozen=True)

    repo: RepoRef
    root: Path  # the host directory the sandbox mounts at /workspace (the snapshot's root)
    commit: str | None  # the pinned commit; None for a directory that is no git checkout
    masks: Masks = Masks()
    notice: str | None = None

    @property
    def snapshot(self) -> bool:
        """Whether ``root`` is a snapshot of ``commit`` (else the live directory)."""
        return self.commit is not None


def describe_age(seconds: float) -> str:
    if seconds < 90:
        return "just now" if seconds < 60 else "1 min old"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min old"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h old"
    return f"{seconds / 86400:.0f} d old"


def stale_notice(state: MirrorState) -> str | None:
    if state.error is None or state.commit is None:
        return None
    age = state.age()
    old = f", {describe_age(age)}" if age is not None else ""
    return f"from {state.commit[:7]}{old}: the last fetch failed ({state.error})"


def pin(repo: RepoRef, mirrors: Path, refresh: float, fetch_timeout: float = 120) -> Pin:
    """The commit a question is answered from; raises ``RepoUnavailable`` (one clear message)."""
    if repo.url is not None:
        mirror = Mirror(repo, mirrors, timeout=fetch_timeout)
        try:
            state = mirror.refresh(refresh)
        except (OSError, GitFailed) as exc:
            raise RepoUnavailable(
                f"Cannot keep a mirror of {repo.name} in {mirrors}: {exc}. "
                "Set ASKBOX_REPO_MIRRORS to a directory the worker can write."
            ) from None
        if state.commit is None:
            raise RepoUnavailable(f"Cannot fetch the repository {repo.name} ({repo.remote}): {state.error}.")
        notice = stale_notice(state)
        if notice:
            log.warning("repository %s answered %s", repo.name, notice)
        return Pin(repo=repo, commit=state.commit, git_dir=mirror.path, notice=notice)
    assert repo.path is not None
    path = repo.path
    if not path.exists():
        raise RepoUnavailable(
            f"The repository {repo.name} is configured at {path}, which does not exist "
            "on this worker: check ASKBOX_REPOS."
        )
    if not path.is_dir():
        raise RepoUnavailable(f"The repository {repo.name} is configured at {path}, which is not a directory.")
    try:
        commit, objects = head_commit(path), object_store(path)
    except OutsideCheckout as exc:
        raise RepoUnavailable(
            f"The repository {repo.name} at {path} is refused: {exc}. askbox reads a checkout's "
            "git data only from inside it."
        ) from None
    if commit is not None and objects is not None:
        return Pin(repo=repo, commit=commit, objects=objects)
    try:
        return Pin(repo=repo, commit=None, live=live_tree(path, repo.deny))
    except Unreadable as exc:
        raise RepoUnavailable(str(exc)) from None
    except OSError as exc:
        raise RepoUnavailable(f"Cannot read the repository {path}: {exc}.") from None


@contextmanager
def mount(pinned: Pin, snapshots: Path) -> Iterator[Workspace]:
    """The pinned commit's snapshot (made if missing), leased until the context ends."""
    repo = pinned.repo
    if pinned.live is not None:
        live = pinned.live
        yield Workspace(
            repo=repo, root=live.root, commit=None, masks=Masks(files=live.masked_files, dirs=live.masked_dirs)
        )
        return
    assert pinned.commit is not None and (pinned.git_dir or pinned.objects) is not None
    commit = pinned.commit
    with ExitStack() as held:
        try:
            with ExitStack() as source:  # a checkout's view lives only while the snapshot is made
                git_dir = pinned.git_dir
                if git_dir is None:
                    assert repo.path is not None and pinned.objects is not None
                    git_dir = source.enter_context(objects_view(repo.path, pinned.objects))
                root = held.enter_context(Snapshots(snapshots).lease(repo, git_dir, commit))
        except DeniedInHistory as exc:
            raise RepoUnavailable(
                f"The repository {repo.name} has history: true, but {exc}, which the secrets "
                'denylist keeps out (git show would print it): remove "history" from its '
                "entry, or the file from its history."
            ) from None
        except OutsideCheckout as exc:
            raise RepoUnavailable(f"The repository {repo.name} at {repo.path} is refused: {exc}.") from None
        except OSError as exc:
            raise RepoUnavailable(
                f"Cannot make a snapshot of {repo.name} at {commit[:7]} in {snapshots}: "
                f"{exc}. Set ASKBOX_REPO_SNAPSHOTS to a directory the worker can write."
            ) from None
        except (GitFailed, RuntimeError) as exc:
            raise RepoUnavailable(f"Cannot make a snapshot of {repo.name} at {commit[:7]}: {exc}.") from None
        yield Workspace(repo=repo, root=root, commit=commit, notice=pinned.notice)


def refresh_all(
    repos: list[RepoRef], mirrors: Path, snapshots: Path, refresh: float, idle: float, fetch_timeout: float = 120
) -> None:
    """One round of the worker's refresher: every remote fetched when due; mirrors of no
    configured remote (a URL changed, a repository removed) and idle snapshots removed."""
    kept = set()
    for repo in repos:
        if repo.url is not None:
            mirror = Mirror(repo, mirrors, timeout=fetch_timeout)
            mirror.refresh(refresh)
            kept.add(mirror.path.name)
    if mirrors.is_dir():
        sweep_mirrors(mirrors, kept, idle)
    if snapshots.is_dir():
        Snapshots(snapshots).cleanup(idle)
