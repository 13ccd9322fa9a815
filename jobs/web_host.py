"""Where a repository's files can be read on the web: permalinks at a commit.

From a git remote URL (``https://…``, ``ssh://…``, scp-style ``git@host:org/repo.git``;
credentials, port of an SSH remote and ``.git`` dropped) the host's URL shapes are
recognised:

==========  ==========================================================  ===============
host        file at a commit                                            commit
==========  ==========================================================  ===============
GitHub      ``{base}/blob/{sha}/{path}#L10-L20``                        ``{base}/commit/{sha}``
GitLab      ``{base}/-/blob/{sha}/{path}#L10-20``                       ``{base}/-/commit/{sha}``
Bitbucket   ``{base}/src/{sha}/{path}#lines-10:20``                     ``{base}/commits/{sha}``
Gitea       ``{base}/src/commit/{sha}/{path}#L10-L20``                  ``{base}/commit/{sha}``
==========  ==========================================================  ===============

Which host is which is decided from the host name alone: ``github.com``,
``bitbucket.org``, ``gitlab.com`` or any name with ``gitlab`` in it (self-hosted GitLab),
``codeberg.org`` or any name with ``gitea`` or ``forgejo`` in it, then any other name
with ``github`` in it (GitHub Enterprise Server). Any other host (or a
self-hosted one named otherwise) needs a URL template; without one there are no links.

A template is a file URL with placeholders: ``{host}`` (the remote's host name),
``{repo}`` (its path, e.g. ``org/repo``, without ``.git``), ``{commit}`` (the full sha),
``{path}`` (URL-quoted, ``/`` kept), ``{start}`` and ``{end}`` (the cited lines; ``end``
is ``start`` for one line). Everything from the first ``#`` on is the line fragment: it
is dropped for a file cited without lines. The commit link is the template with an
empty ``{path}`` and no fragment. A template wins over the recognised shapes.

Hand-written: no maintained library maps remotes to these web shapes (``giturlparse``
parses remotes but has no permalink shapes for all four, and is barely maintained).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit

from jobs.repos.checkout import origin_url

HostKind = Literal["github", "gitlab", "bitbucket", "gitea", "template"]
TEMPLATE_FIELDS = frozenset({"host", "repo", "commit", "path", "start", "end"})

_SCP = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>[^/:\[\]]+|\[[^\]]+\]):(?!//)(?P<path>.+)$")


class BadTemplate(ValueError):
    """A URL template with a placeholder this module does not fill."""


@dataclass(frozen=True)
class Remote:
    """A remote's web-relevant parts; never any credential."""

    scheme: str  # https, or http for a plain-http remote
    host: str  # with ":port" for an http(s) remote on another port
    path: str  # "org/repo", no leading "/", no ".git"

    @property
    def hostname(self) -> str:
        return self.host.rsplit(":", 1)[0] if not self.host.startswith("[") else self.host.split("]")[0] + "]"


def parse_remote(url: str) -> Remote | None:
    """The web-relevant parts of a git remote, or None (a local path, ``file://``, junk)."""
    url = url.strip()
    if not url:
        return None
    if "://" in url:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in {"http", "https", "ssh", "git", "git+ssh", "ssh+git"} or not parts.hostname:
            return None
        host = parts.hostname.lower()
        if scheme in {"http", "https"} and parts.port not in (None, 80, 443):
            host = f"{host}:{parts.port}"  # a web server on its own port serves the web pages too
        web_scheme = "http" if scheme == "http" else "https"
        path = parts.path
    else:
        match = _SCP.match(url)
        if match is None or url.startswith(("/", ".", "~")):
            return None
        host, path, web_scheme = match["host"].lower(), match["path"], "https"
    path = path.strip("/").removesuffix(".git").strip("/")
    if not path or ".." in path.split("/"):
        return None
    return Remote(scheme=web_scheme, host=host, path=path)


def _kind_of(hostname: str) -> HostKind | None:
    if hostname == "github.com":
        return "github"
    if hostname == "bitbucket.org":
        return "bitbucket"
    if "gitlab" in hostname:
        return "gitlab"
    if hostname == "codeberg.org" or "gitea" in hostname or "forgejo" in hostname:
        return "gitea"
    if "github" in hostname:  # GitHub Enterprise Server: the same shapes as github.com
        return "github"
    return None


def check_template(template: str) -> str:
    """``template`` if every placeholder is one we fill; else BadTemplate naming it."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise BadTemplate(f"bad URL template {template!r}: {exc}") from None
    unknown = names - TEMPLATE_FIELDS
    if unknown or not template.lower().startswith(("https://", "http://")):
        what = f"unknown placeholder(s) {sorted(unknown)}" if unknown else "it must start with https:// or http://"
        raise BadTemplate(f"bad URL template {template!r}: {what}; placeholders: {sorted(TEMPLATE_FIELDS)}")
    return template


@dataclass(frozen=True)
class WebHost:
    """Permalinks to one repository's files at a commit."""

    kind: HostKind
    base: str  # "https://github.com/org/repo" (template hosts: "")
    remote: Remote | None = None
    template: str | None = None

    def file_url(self, commit: str, path: str, start: int | None = None, end: int | None = None) -> str:
        quoted = quote(path.lstrip("/"), safe="/")
        if start is not None and end is None:
            end = start
        if self.kind == "template":
            return self._fill(commit, quoted, start, end)
        url = {
            "github": f"{self.base}/blob/{commit}/{quoted}",
            "gitlab": f"{self.base}/-/blob/{commit}/{quoted}",
            "bitbucket": f"{self.base}/src/{commit}/{quoted}",
            "gitea": f"{self.base}/src/commit/{commit}/{quoted}",
        }[self.kind]
        if start is None:
            return url
        one = start == end
        fragment = {
            "github": f"#L{start}" if one else f"#L{start}-L{end}",
            "gitlab": f"#L{start}" if one else f"#L{start}-{end}",
            "bitbucket": f"#lines-{start}" if one else f"#lines-{start}:{end}",
            "gitea": f"#L{start}" if one else f"#L{start}-L{end}",
        }[self.kind]
        return url + fragment

    def commit_url(self, commit: str) -> str:
        if self.kind == "template":
            return self._fill(commit, "", None, None)
        return {
            "github": f"{self.base}/commit/{commit}",
            "gitlab": f"{self.base}/-/commit/{commit}",
            "bitbucket": f"{self.base}/commits/{commit}",
            "gitea": f"{self.base}/commit/{commit}",
        }[self.kind]

    def _fill(self, commit: str, path: str, start: int | None, end: int | None) -> str:
        assert self.template is not None
        template = self.template if start is not None else self.template.split("#", 1)[0]
        remote = self.remote
        return template.format(
            host=remote.host if remote else "",
            repo=remote.path if remote else "",
            commit=commit,
            path=path,
            start=start or "",
            end=end or "",
        )


def web_host(remote: str | None, template: str | None = None) -> WebHost | None:
    """The web host of a repository from its (credential-free) remote URL and optional
    URL template; None when no permalink can be built."""
    parsed = parse_remote(remote) if remote else None
    if template:
        return WebHost(kind="template", base="", remote=parsed, template=check_template(template))
    if parsed is None:
        return None
    kind = _kind_of(parsed.hostname)
    if kind is None:
        return None
    return WebHost(kind=kind, base=f"{parsed.scheme}://{parsed.host}/{parsed.path}", remote=parsed)


def checkout_remote(checkout: Path) -> str | None:
    """``remote.origin.url`` of a local checkout (a repository given as a directory), or
    None: read from its own config file as data (jobs/repos/checkout.py), never by git
    run in the checkout. What it returns goes through ``parse_remote``, which keeps no
    credential."""
    return origin_url(checkout)
