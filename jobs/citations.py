"""An answer's references to files, checked against the tree it was answered from and
turned into permalinks at the pinned commit.

References are ``path``, ``path:line``, ``path:start-end`` and ``path#L10`` /
``path#L10-L20`` (also ``/workspace/path…``, as the agent sees the tree), backticked or
in plain text. A backticked one must fill its whole code span; a plain one must contain
a ``/`` or a ``.`` (so ordinary words cost no file lookup). Each is checked against the
tree: a regular file under the root (no ``..``, no ``.git``, no symlink leading out of
it) and lines within its line count. Only those become Markdown links, e.g.
``[`src/app.py:12`](https://github.com/o/r/blob/<sha>/src/app.py#L12)``; a made-up file
or a line past the end stays as written. Fenced code blocks, code spans that are not a
reference, existing links (``[x](y)``, ``<url>``) and bare URLs are left alone.

Pure apart from reading the tree (file type, line counts); no network, no git.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from jobs.web_host import BadTemplate, WebHost, web_host

log = logging.getLogger(__name__)

WORKSPACE = "/workspace"  # where the sandbox mounts the tree (sandbox/spec.py WORKSPACE)
MAX_CHECKS = 500  # distinct paths looked up per answer: an answer of 10,000 dotted words stays cheap
MAX_BYTES = 32 * 2**20  # line counts are read; a larger file is not linked

_SEG = r"\.?[\w+@-]+(?:\.[\w+@-]+)*"
_PATH = rf"(?:{re.escape(WORKSPACE)}/|\./)?(?P<path>{_SEG}(?:/{_SEG})*)"
_LINES = r"(?::(?P<a>\d{1,9})(?:-(?P<b>\d{1,9}))?|#L(?P<c>\d{1,9})(?:-L?(?P<d>\d{1,9}))?)?"
# Not preceded by what would make it the tail of a longer token (a URL, another path);
# not followed by what would continue it ("app.pyc", "src/app.py/x", "a.py.bak").
_PLAIN_REF = re.compile(rf"(?<![\w./@+#:~-]){_PATH}{_LINES}(?![\w/@+-]|\.\w)")
_WHOLE_REF = re.compile(rf"{_PATH}{_LINES}")

# What is never rewritten inside a line, in the order a reader meets it: code spans (one
# that is a whole reference is linked), links and images, autolinks, bare URLs.
_PROTECTED = re.compile(
    r"(?P<code>(?<!`)(?P<ticks>`+)(?!`)(?P<body>.+?)(?<!`)(?P=ticks)(?!`))"
    r"|(?P<link>!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\([^)]*\))"
    r"|(?P<auto><[a-z][a-z0-9+.-]*:[^\s<>]*>)"
    r"|(?P<url>(?:[a-z][a-z0-9+.-]*://|www\.)[^\s<>]+)",
    re.IGNORECASE,
)
_LINK_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s")  # "[1]: https://…" reference-style targets
_FENCE_OPEN = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_NEEDS_CODE_LABEL = re.compile(r"[_*~]")  # emphasis marks a plain label would lose


@dataclass(frozen=True)
class Reference:
    """One reference found in the text, before it is checked."""

    path: str  # relative to the tree's root
    start: int | None = None
    end: int | None = None

    @property
    def lines(self) -> tuple[int, int] | None:
        return None if self.start is None else (self.start, self.end if self.end is not None else self.start)


def parse_reference(match: re.Match[str]) -> Reference:
    start = match["a"] or match["c"]
    end = match["b"] or match["d"]
    return Reference(path=match["path"], start=int(start) if start else None, end=int(end) if end else None)


class Tree:
    """The snapshot a question was answered from, as far as citations need it."""

    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)
        self._lines: dict[str, int | None] = {}

    def line_count(self, path: str) -> int | None:
        """Lines in the regular file ``path`` under the root, or None (absent, a
        directory, outside the root, too large, or too many lookups already)."""
        if path in self._lines:
            return self._lines[path]
        if len(self._lines) >= MAX_CHECKS:
            return None
        self._lines[path] = count = self._count(path)
        return count

    def _count(self, path: str) -> int | None:
        parts = PurePosixPath(path).parts
        if not parts or path.startswith("/") or any(p in {"..", ".git"} for p in parts):
            return None
        real = os.path.realpath(os.path.join(self.root, *parts))
        if os.path.commonpath([real, self.root]) != self.root or real == self.root:
            return None  # a symlink leading out of the tree
        try:
            info = os.stat(real)
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES:
                return None
            with open(real, "rb") as handle:
                data = handle.read(MAX_BYTES + 1)
        except OSError:
            return None
        return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)

    def exists(self, ref: Reference) -> bool:
        count = self.line_count(ref.path)
        if count is None:
            return False
        if ref.lines is None:
            return True
        first, last = ref.lines
        return 1 <= first <= last <= count


@dataclass(frozen=True)
class Cited:
    """An answer ready for its Final: the text with its citations linked, and the commit's link."""

    text: str
    commit_url: str | None = None


def cite(text: str, *, root: Path, commit: str | None, remote: str | None, web_url: str | None = None) -> Cited:
    """The one call for a question's answer: ``root`` is the tree the agent read (the
    snapshot), ``commit`` the commit it was pinned to, ``remote`` the repository's
    credential-free remote URL and ``web_url`` its URL template (jobs/web_host.py), if any.
    No commit, or no web host to link to: the text as it was."""
    try:
        host = web_host(remote, web_url) if commit else None
    except BadTemplate as exc:  # validated with the repository's settings; never fail an answer over it
        log.warning("no citation links: %s", exc)
        host = None
    if host is None or commit is None:
        return Cited(text)
    return Cited(link_citations(text, root, commit, host), host.commit_url(commit))


def link_citations(markdown: str, root: Path, commit: str, host: WebHost) -> str:
    """``markdown`` with every reference that exists in the tree at ``root`` linked to
    ``host``'s permalink at ``commit``; everything else exactly as it was."""
    tree = Tree(root)

    def url(ref: Reference) -> str | None:
        if not tree.exists(ref):
            return None
        first, last = ref.lines or (None, None)
        return host.file_url(commit, ref.path, first, last)

    return rewrite(markdown, url)


def rewrite(markdown: str, url: Callable[[Reference], str | None]) -> str:
    """Every reference outside code blocks and links replaced by a link to ``url(ref)``,
    when that is not None."""
    out: list[str] = []
    fence: str | None = None
    for line in markdown.split("\n"):
        if fence is not None:
            stripped = line.strip()
            if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                fence = None
            out.append(line)
            continue
        opened = _FENCE_OPEN.match(line)
        if opened and not (opened["fence"][0] == "`" and "`" in opened["info"]):
            fence = opened["fence"]
            out.append(line)
            continue
        out.append(line if _LINK_DEFINITION.match(line) else _rewrite_line(line, url))
    return "\n".join(out)


def _rewrite_line(line: str, url: Callable[[Reference], str | None]) -> str:
    pieces: list[str] = []
    pos = 0
    for match in _PROTECTED.finditer(line):
        pieces.append(_rewrite_plain(line[pos : match.start()], url))
        pieces.append(_code_span(match, url) if match["code"] else match.group(0))
        pos = match.end()
    pieces.append(_rewrite_plain(line[pos:], url))
    return "".join(pieces)


def _code_span(match: re.Match[str], url: Callable[[Reference], str | None]) -> str:
    body = match["body"]
    if len(body) >= 2 and body.startswith(" ") and body.endswith(" ") and body.strip():
        body = body[1:-1]  # CommonMark strips one space each side
    whole = _WHOLE_REF.fullmatch(body)
    target = url(parse_reference(whole)) if whole else None
    return f"[{match.group(0)}]({target})" if target else match.group(0)


def _rewrite_plain(text: str, url: Callable[[Reference], str | None]) -> str:
    def link(match: re.Match[str]) -> str:
        ref = parse_reference(match)
        if "/" not in ref.path and "." not in ref.path:
            return match.group(0)
        target = url(ref)
        if target is None:
            return match.group(0)
        label = match.group(0)
        label = f"`{label}`" if _NEEDS_CODE_LABEL.search(label) else label
        return f"[{label}]({target})"

    return _PLAIN_REF.sub(link, text)
