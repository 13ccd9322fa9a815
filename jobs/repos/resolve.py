"""Which repository a question is about: a configured name, or (where allowed) a directory."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from jobs.repos.config import DEFAULT_DENY, RepoEntry

ENV_VAR = "ASKBOX_REPOS"


class RepoRef(BaseModel):
    """A resolved repository: where it comes from and how a snapshot of it is made."""

    model_config = ConfigDict(frozen=True)

    name: str
    path: Path | None = None  # a local directory (None for a git remote)
    url: str | None = Field(default=None, repr=False)  # a git remote, credential-free (config refuses others)
    branch: str | None = None
    token: SecretStr | None = Field(default=None, repr=False, exclude=True)
    token_env: str | None = None
    ssh_key: Path | None = None
    history: bool = False
    deny: tuple[str, ...] = DEFAULT_DENY
    web_url: str | None = None  # a permalink template, for citations

    @property
    def remote(self) -> str | None:
        """The remote as it may be shown or parsed (no user info at all), None for a local path."""
        if self.url is None:
            return None
        parts = urlsplit(self.url)
        if not parts.scheme or not parts.netloc:
            return self.url  # scp-style git@host:org/repo.git or file:///path
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        if parts.scheme in {"ssh", "git+ssh"} and parts.username:
            host = f"{parts.username}@{host}"  # "git@": a user name, not a credential
        return urlunsplit((parts.scheme, host, parts.path, "", ""))

    @property
    def slug(self) -> str:
        """A directory name for this repository's mirror and snapshots: its name, and for a
        remote its URL and branch too. A name given another URL gets a mirror of its own at
        once (never the old remote's commit, nor two remotes' objects in one mirror); the
        old one is swept when unused (jobs/repos/mirror.py)."""
        readable = re.sub(r"[^A-Za-z0-9._-]", "_", self.name).strip("._")[:40] or "repo"
        key = self.name if self.url is None else "\0".join((self.name, _normalised(self.url), self.branch or ""))
        return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _normalised(url: str) -> str:
    """One spelling per remote: scheme and host are case-insensitive, a trailing "/" means nothing."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url.rstrip("/")  # scp-style user@host:path
    user, at, host = parts.netloc.rpartition("@")
    return urlunsplit((parts.scheme.lower(), f"{user}{at}{host.lower()}", parts.path.rstrip("/"), parts.query, ""))


class UnknownRepo(ValueError):
    """The question names no usable repository; the message says which ones exist."""

    def __init__(self, problem: str, known: Iterable[str]) -> None:
        self.known = sorted(known)
        if self.known:
            hint = "Known repositories: " + ", ".join(self.known) + "."
        else:
            hint = f'No repositories are configured: set {ENV_VAR}, e.g. {{"web": "/srv/repos/web"}}.'
        super().__init__(f"{problem} {hint}")


def _looks_like_path(text: str) -> bool:
    # Only something path-shaped is taken as a path: a bare unknown word is a mistyped
    # name, and must not silently pick up a same-named directory in the worker's cwd.
    return "/" in text or os.sep in text or text.startswith(("~", "."))


def _ref(name: str, entry: RepoEntry | Path | str) -> RepoRef:
    if not isinstance(entry, RepoEntry):
        entry = RepoEntry.model_validate(Path(entry) if not isinstance(entry, str) else entry)
    return RepoRef(
        name=name,
        path=entry.path,
        url=entry.url,
        branch=entry.branch,
        token=entry.token,
        token_env=entry.token_env,
        ssh_key=entry.ssh_key,
        history=entry.history,
        deny=entry.effective_deny,
        web_url=entry.web_url,
    )


def resolve_repo(
    name_or_path: str | None,
    repos: Mapping[str, RepoEntry | Path],
    allow_paths: bool,
    default: str | None = None,
) -> RepoRef:
    requested = name_or_path.strip() if name_or_path else ""
    if not requested:
        if default:
            return resolve_repo(default, repos, allow_paths)
        if len(repos) == 1:
            return _ref(*next(iter(repos.items())))
        raise UnknownRepo("No repository given.", repos)

    # A configured name wins even if a directory of that name also exists.
    if requested in repos:
        return _ref(requested, repos[requested])

    if not _looks_like_path(requested):
        raise UnknownRepo(f"Unknown repository {requested!r}.", repos)
    if not allow_paths:
        raise UnknownRepo(
            f"Repository paths are not accepted here ({requested!r}); a worker takes them from "
            "terminal questions only with ASKBOX_ALLOW_REPO_PATHS=true.",
            repos,
        )
    path = Path(requested).expanduser()
    if not path.exists():
        raise UnknownRepo(f"No such directory: {path}.", repos)
    if not path.is_dir():
        raise UnknownRepo(f"Not a directory: {path}.", repos)
    # The canonical path is the name, so two spellings of one directory share cache keys.
    resolved = path.resolve()
    return RepoRef(name=str(resolved), path=resolved)
