"""What ``ASKBOX_REPOS`` says about each repository: a local path or a git remote, and how to read it.

Each entry is a path (``"/srv/repos/web"``), a remote URL (``"https://host/org/web.git"``,
``"ssh://git@host/org/web.git"``, scp-style ``"git@host:org/web.git"``, ``"file:///srv/git/web.git"``)
or an object::

    {"url": "https://host/org/web.git", "branch": "main", "token_env": "WEB_TOKEN",
     "ssh_key": "/etc/askbox/web_deploy_key", "history": false, "deny": ["config/*.secret"],
     "web_url": "https://code.example.com/web/blob/{commit}/{path}#L{line}",
     "instructions": "Readers are support engineers: explain behaviour, not internals."}

A token is named, never given: ``token_env`` names the variable holding it, read once when
the settings load (the bot, which only needs the names, may not have it). URLs must not
carry credentials: they are stored in the mirror's state and shown in messages.

``deny`` adds gitignore patterns to ``DEFAULT_DENY`` (jobs/repos/denylist.py); the defaults
cannot be switched off per repo, nor a ``!`` pattern take a file back (a secret excluded by
accident is a smaller harm than one shown in a public channel).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from jobs.repos.denylist import DEFAULT_DENY, check_pattern

_SCP = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:(?!//)")  # git@host:org/repo.git
_SCHEMES = {"https", "http", "ssh", "git+ssh", "file"}
_BRANCH = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]+(?<![./])$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_INSTRUCTIONS = 4000  # characters of operators' instructions for the agent (a repository's, a channel's)


def looks_like_url(text: str) -> bool:
    return "://" in text or bool(_SCP.match(text))


class RepoEntry(BaseModel):
    """One configured repository: exactly one of ``path`` and ``url``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path | None = None
    url: str | None = None
    branch: str | None = Field(default=None, description="default: the remote's HEAD")
    token_env: str | None = None
    # Read from token_env when the settings load; None where it is not set (the bot).
    token: SecretStr | None = Field(default=None, exclude=True, repr=False)
    ssh_key: Path | None = None
    history: bool = False
    deny: tuple[str, ...] = ()
    web_url: str | None = None
    # Added to the agent's prompt for every question on this repository (jobs/prompt.py).
    instructions: str | None = Field(default=None, max_length=MAX_INSTRUCTIONS)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, Path):
            return {"path": value}
        if isinstance(value, str):
            return {"url": value} if looks_like_url(value) else {"path": value}
        if isinstance(value, Mapping) and "token" in value:
            raise ValueError('no "token" in the configuration: name its variable with "token_env"')
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RepoEntry:
        if (self.path is None) == (self.url is None):
            raise ValueError('give exactly one of "path" and "url"')
        if self.path is not None:
            remote_only = [k for k in ("branch", "token_env", "ssh_key") if getattr(self, k) is not None]
            if remote_only:
                raise ValueError(f'{", ".join(remote_only)} only apply to a git remote ("url")')
            if not self.path.is_absolute():
                raise ValueError(f"path {str(self.path)!r} must be absolute (the worker's directory is not yours)")
        else:
            _check_url(self.url or "", self)
        if self.branch is not None and not _BRANCH.match(self.branch):
            raise ValueError(f"branch {self.branch!r} is not a branch name")
        for pattern in self.deny:
            if not pattern or pattern.startswith("/") or "\0" in pattern:
                raise ValueError(f'deny pattern {pattern!r}: a glob relative to the repository, e.g. "*.secret"')
            check_pattern(pattern)  # a ValueError naming the pattern
        if self.token_env is not None:
            if not _ENV_NAME.match(self.token_env):
                raise ValueError(f"token_env {self.token_env!r} is not an environment variable name")
            value = os.environ.get(self.token_env)
            if value:
                object.__setattr__(self, "token", SecretStr(value))
        return self

    @property
    def effective_deny(self) -> tuple[str, ...]:
        return DEFAULT_DENY + tuple(p for p in self.deny if p not in DEFAULT_DENY)


def _check_url(url: str, entry: RepoEntry) -> None:
    if _SCP.match(url):
        if entry.token_env:
            raise ValueError("token_env needs an https:// URL; an scp-style (ssh) remote uses ssh_key")
        return
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"url {url!r}: use https://, ssh://, file:// or user@host:path")
    if parts.password is not None or (parts.scheme in {"https", "http"} and parts.username):
        raise ValueError("the url must not hold credentials: put the token in a variable named by token_env")
    if parts.scheme == "file":
        if entry.token_env or entry.ssh_key:
            raise ValueError("a file:// remote takes no token_env or ssh_key")
        return
    if entry.token_env and parts.scheme not in {"https", "http"}:
        raise ValueError("token_env needs an https:// URL; an ssh remote uses ssh_key")
    if entry.token_env and parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ValueError("a token is never sent over plain http:// (only to this machine's loopback)")
    if entry.ssh_key and parts.scheme not in {"ssh", "git+ssh"}:
        raise ValueError("ssh_key needs an ssh:// or user@host:path URL")


def parse_repos(value: Any) -> dict[str, RepoEntry]:
    """``ASKBOX_REPOS`` (its JSON text, or an already parsed mapping) -> entries.

    Raises a one-line ``PydanticCustomError`` naming the entry (or, for JSON that does not
    parse, where it breaks), which the settings tree turns into ``invalid ASKBOX_REPOS: ...``."""
    if isinstance(value, (str, bytes)):
        text = value.decode() if isinstance(value, bytes) else value
        try:
            value = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            near = text[max(0, exc.pos - 12) : exc.pos + 12]
            raise _error(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (near {near!r})") from None
    if not isinstance(value, Mapping):
        raise _error('must be a JSON object of name -> path, URL or object, e.g. {"web": "/srv/repos/web"}')
    entries: dict[str, RepoEntry] = {}
    for name, raw in value.items():
        if not isinstance(name, str) or not name.strip():
            raise _error("a repository name must be a non-empty string")
        try:
            entries[name] = raw if isinstance(raw, RepoEntry) else RepoEntry.model_validate(raw)
        except ValidationError as exc:
            raise _error(f"entry {name!r}: {_first_problem(exc)}") from None
    return entries


def repos_from_file(path: Path, already: Mapping[str, RepoEntry]) -> dict[str, RepoEntry]:
    """``ASKBOX_REPOS_FILE``: a TOML file, one table per repository (the keys of an object
    entry), e.g. ``[web]`` / ``url = "https://..."`` / ``token_env = "WEB_TOKEN"``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _error(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _error(f"{path} is not valid TOML: {exc}") from None
    try:
        entries = parse_repos(data)
    except PydanticCustomError as exc:
        raise _error(f"{path}: {exc.message()}") from None
    twice = sorted(set(entries) & set(already))
    if twice:
        raise _error(f"{path}: {', '.join(twice)} also in ASKBOX_REPOS; name each repository once")
    return entries


def _error(message: str) -> PydanticCustomError:
    # The message as the context's one value: its own braces (JSON) are never a template.
    return PydanticCustomError("askbox_repos", "{problem}", {"problem": message})


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        known = ", ".join(sorted(RepoEntry.model_fields.keys() - {"token"}))
        return f'unknown key "{where}" (known: {known})'
    if error["type"] == "model_type" or (error["type"].endswith("_type") and not where):
        return "must be a path, a URL or an object"
    return f"{where}: {message}" if where else message
