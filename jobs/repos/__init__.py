"""Repositories: which one a question is about, and the read-only snapshot its sandbox mounts.

One concept per module: ``config`` (what ``ASKBOX_REPOS`` says), ``resolve`` (a question's
repository), ``checkout`` (a local checkout read as data, from inside it), ``head`` (a
checkout's commit), ``git`` (running git so that no repository runs anything), ``mirror``
(a remote's bare mirror on this host), ``denylist`` (the paths no sandbox sees),
``snapshot`` (one commit's tree, shared and cleaned up), ``readability`` (what the sandbox
user can read of a live directory), ``locks`` (fork-safe file locks), ``workspace`` (all
of it, for one question).
"""

from jobs.repos.config import DEFAULT_DENY, RepoEntry, parse_repos
from jobs.repos.head import head_commit
from jobs.repos.resolve import RepoRef, UnknownRepo, resolve_repo
from jobs.repos.workspace import Pin, RepoUnavailable, Workspace, mount, pin, refresh_all

__all__ = [
    "DEFAULT_DENY",
    "Pin",
    "RepoEntry",
    "RepoRef",
    "RepoUnavailable",
    "UnknownRepo",
    "Workspace",
    "head_commit",
    "mount",
    "parse_repos",
    "pin",
    "refresh_all",
    "resolve_repo",
]
