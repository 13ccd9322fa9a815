"""An answer's references to code, checked against the tree it was answered from and
turned into permalinks at the pinned commit.

What is a reference (outside code blocks, links and URLs; see docs/citations-and-access.md):

- a path: ``path``, ``path:line``, ``path:start-end``, ``path#L10``/``path#L10-L20`` (also
  ``/workspace/path…``, as the agent sees the tree), backticked (filling its code span) or
  in plain text (with a ``/`` or a ``.``, so ordinary words cost no lookup);
- a path followed by its lines in words: "`provider.py` (lines 144-148)", "app.py, line
  42", "app.py at lines 10–20"; or preceded by them: "lines 3-5 of `app.py`";
- lines in words on their own ("the `dumps` method (lines 166-179)"): in the file named
  last before them (a path, or a symbol's file);
- a bare file name or partial path that is no path from the root (`blueprints.py`,
  `json/provider.py`): the one file of the tree whose path ends so;
- a symbol: an identifier in backticks (`DefaultJSONProvider`,
  `Blueprint._check_setup_finished`, `parse()`), the one definition of the tree it names
  (jobs/tree_index.py: Universal Ctags' index of the snapshot).

Each is linked only when it is real: a regular file under the root (no ``..``, no
``.git``, no symlink leading out of it), lines within its line count, a name matching
exactly one file or one definition. Anything else stays exactly as written: a made-up
file, a line past the end, an ambiguous name.

What is counted (``Cited``, for the footer and ``askbox eval``): *verified*, the
references linked; *found*, those plus the ones that claim a place and could not be
verified (a path with a directory or with lines, lines in words after a file: made up,
or past the end). A name that is no file or definition (`dumps`, `e.g.`) claims nothing
and is not counted; an ambiguous one is not either. Bounded: ``MAX_SCAN`` characters of an
answer are read (the rest passes unchanged), lines longer than ``MAX_LINE`` pass
unchanged, at most ``MAX_CHECKS`` distinct files are opened.

Pure apart from reading the tree (file types, line counts) and the index; no network, no git.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from jobs.slack.mrkdwn import deceptive
from jobs.tree_index import TreeIndex
from jobs.web_host import BadTemplate, WebHost, web_host

log = logging.getLogger(__name__)

WORKSPACE = "/workspace"  # where the sandbox mounts the tree (sandbox/spec.py WORKSPACE)
MAX_CHECKS = 500  # distinct paths looked up per answer: an answer of 10,000 dotted words stays cheap
MAX_BYTES = 32 * 2**20  # line counts are read; a larger file is not linked
MAX_SCAN = 256 * 1024  # characters of an answer looked at (Slack posts 12,000 as messages)
MAX_LINE = 8 * 1024  # a longer line is left as it is: each line's scan stays linear and short

_SEG = r"\.?[\w+@-]+(?:\.[\w+@-]+)*"
_PATH = rf"(?:{re.escape(WORKSPACE)}/|\./)?(?P<path>{_SEG}(?:/{_SEG})*)"
_LINES = r"(?::(?P<a>\d{1,9})(?:-(?P<b>\d{1,9}))?|#L(?P<c>\d{1,9})(?:-L?(?P<d>\d{1,9}))?)?"
# Not preceded by what would make it the tail of a longer token (a URL, another path);
# not followed by what would continue it ("app.pyc", "src/app.py/x", "a.py.bak").
_PLAIN_REF = re.compile(rf"(?<![\w./@+#:~-]){_PATH}{_LINES}(?![\w/@+-]|\.\w)")
_WHOLE_REF = re.compile(rf"{_PATH}{_LINES}")
# Lines in words: "line 42", "lines 10-20", "lines 10–20", "lines 10 to 20"; not a list
# ("lines 10 and 12 of x.py": no one range, so no link at all).
_LINE_WORDS = re.compile(
    r"(?<![\w-])[Ll]ines?[ \t]+(?P<s>\d{1,9})(?:[ \t]*(?:-|–|—|to|through)[ \t]*(?P<e>\d{1,9}))?(?![\w-]|[.,:]\d|[ \t]*(?:,|and|&)[ \t]*\d)"
)
# What may stand between a reference and the lines that are its own: "app.py (lines 3-4)",
# "app.py, line 3", "app.py at line 3"; and between lines and their file: "lines 3-4 of app.py".
_GAP_BEFORE_LINES = re.compile(r"[ \t]*[,(]?[ \t]*(?:(?:at|on|in)[ \t]+)?")
_GAP_BEFORE_FILE = re.compile(r"[ \t]+(?:of|in)[ \t]+")
# A symbol in a code span: a name, dotted/"::"/"#"-qualified, with an optional "()".
_SEPARATOR = re.compile(r"\.|::|#")
_IDENTIFIER = re.compile(r"(?P<name>[A-Za-z_$][\w$]*(?:(?:\.|::|#)[A-Za-z_$][\w$]*)*)(?:\(\))?")

# What is never rewritten inside a line, in the order a reader meets it: code spans (one
# that is a reference is linked), links and images, autolinks, bare URLs.
_PROTECTED = re.compile(
    r"(?P<code>(?<!`)(?P<ticks>`+)(?!`)(?P<body>.+?)(?<!`)(?P=ticks)(?!`))"
    r"|(?P<link>!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\([^)]*\))"
    r"|(?P<auto><[a-z][a-z0-9+.-]*:[^\s<>]*>)"
    # A scheme starts a token and is short: "aaaa…" is not re-read to its end from every letter.
    r"|(?P<url>(?:(?<![a-z0-9+.-])[a-z][a-z0-9+.-]{0,31}://|www\.)[^\s<>]+)",
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
    """An answer ready for its Final: the text with its citations linked, the commit's
    link, and how many references were verified (and linked)."""

    text: str
    commit_url: str | None = None
    verified: int = 0
    found: int = 0  # verified, and the references that claim a place the tree does not have


def cite(
    text: str,
    *,
    root: Path,
    commit: str | None,
    remote: str | None,
    web_url: str | None = None,
    index: Callable[[], TreeIndex] | None = None,
) -> Cited:
    """The one call for a question's answer: ``root`` is the tree the agent read (the
    snapshot), ``commit`` the commit it was pinned to, ``remote`` the repository's
    credential-free remote URL and ``web_url`` its URL template (jobs/web_host.py), if any;
    ``index`` gives the snapshot's files and definitions (called only when the answer names
    a file by a bare name or a symbol). No commit, or no web host to link to: the text as
    it was."""
    try:
        host = web_host(remote, web_url) if commit else None
    except BadTemplate as exc:  # validated with the repository's settings; never fail an answer over it
        log.warning("no citation links: %s", exc)
        host = None
    if host is None or commit is None:
        return Cited(text)
    linker = Linker(Tree(root), commit, host, index)
    return Cited(linker.rewrite(text), host.commit_url(commit), linker.linked, linker.found)


def link_citations(
    markdown: str, root: Path, commit: str, host: WebHost, index: Callable[[], TreeIndex] | None = None
) -> str:
    """``markdown`` with every reference that exists in the tree at ``root`` linked to
    ``host``'s permalink at ``commit``; everything else exactly as it was."""
    return Linker(Tree(root), commit, host, index).rewrite(markdown)


@dataclass
class _Item:
    """A piece of one line that may be a reference, in reading order."""

    start: int
    end: int
    kind: str  # "path" (plain text), "code" (a code span), "lines" (lines in words), "opaque"
    match: re.Match[str]
    lines: tuple[int, int] | None = None  # given by the lines in words before it
    taken: bool = False  # lines in words that went to the reference next to them
    file: str | None = None  # lines in words right after a symbol: in the symbol's file

    @property
    def reference(self) -> Reference | None:
        """What a path or a code span that is a whole path names."""
        if self.kind == "path":
            return parse_reference(self.match)
        whole = _WHOLE_REF.fullmatch(_span_body(self.match)) if self.kind == "code" else None
        return parse_reference(whole) if whole else None


class Linker:
    """One answer's references resolved and linked in reading order (lines in words on
    their own refer to the file named last)."""

    def __init__(self, tree: Tree, commit: str, host: WebHost, index: Callable[[], TreeIndex] | None = None) -> None:
        self.tree = tree
        self.commit = commit
        self.host = host
        self._index = index
        self.last_file: str | None = None
        self.linked = 0
        self.found = 0  # every reference checked (linked or not): the module docstring

    def rewrite(self, markdown: str) -> str:
        """Every reference outside code blocks and links replaced by its link, when it is real."""
        out: list[str] = []
        fence: str | None = None
        scanned = 0
        lines = markdown.split("\n")
        for number, line in enumerate(lines):
            scanned += len(line) + 1
            if scanned > MAX_SCAN:  # the rest as it is
                out.extend(lines[number:])
                break
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
            skip = len(line) > MAX_LINE or _LINK_DEFINITION.match(line)
            out.append(line if skip else self._line(line))
        return "\n".join(out)

    def _line(self, line: str) -> str:
        items = _items(line)
        pieces: list[str] = []
        pos = 0
        for number, item in enumerate(items):
            after = items[number + 1] if number + 1 < len(items) else None
            gap = line[item.end : after.start] if after else ""
            pieces += [line[pos : item.start], self._render(item, after, gap)]
            pos = item.end
        pieces.append(line[pos:])
        return "".join(pieces)

    def _render(self, item: _Item, after: _Item | None, gap: str) -> str:
        text = item.match.group(0)
        if item.kind == "opaque" or item.taken:
            return text
        if item.kind == "lines":
            first, last = _words(item.match)
            ref = after.reference if after is not None and _GAP_BEFORE_FILE.fullmatch(gap) else None
            if after is not None and ref is not None and _file_like(ref.path):
                if ref.start is None:
                    after.lines = (first, last)  # "lines 3-4 of app.py": the path's link carries them
                return text  # a made-up file's lines are not the last file's
            file = item.file or self.last_file
            url = self._url(Reference(file, first, last)) if file else None
            return f"[{text}]({url})" if url else text
        ref = item.reference
        path = self._file(ref.path) if ref is not None else None
        own_lines = after is not None and after.kind == "lines" and _GAP_BEFORE_LINES.fullmatch(gap) is not None
        if ref is None or path is None:
            if item.kind == "code" and (symbol := self._symbol(text, _span_body(item.match))) is not None:
                linked, where = symbol
                if after is not None and own_lines:
                    after.file = where  # "`Parser.parse` (lines 3-9)": lines of the symbol's file
                return linked
            if after is not None and own_lines and ref is not None and _file_like(ref.path):
                after.taken = True  # "nope.py (lines 1-2)": a file's lines, not the last file's
            if ref is not None and ("/" in ref.path or ref.lines or item.lines or (own_lines and _file_like(ref.path))):
                self.found += 1  # it claims a place, and the tree has none such
            return text
        lines = item.lines or ref.lines
        if after is not None and own_lines:
            after.taken = True  # "app.py (lines 3-4)": its own lines (or said twice, "app.py:3 (line 3)")
            lines = lines or _words(after.match)
        url = self._url(Reference(path, *(lines or (None, None))))
        if url is None:
            return text
        self.last_file = path
        if item.kind == "path" and _NEEDS_CODE_LABEL.search(text):
            return f"[`{text}`]({url})"
        return f"[{text}]({url})"

    def _file(self, written: str) -> str | None:
        """The tree's path ``written`` names: itself, or the one file it is the end of."""
        bare = "/" not in written and "." not in written.strip(".")
        # An extensionless bare word ("Makefile", "config", an identifier) is a file only at
        # the root: a stat first, so identifiers do not use up the answer's MAX_CHECKS.
        if bare and not os.path.isfile(os.path.join(self.tree.root, written)):
            return None
        if self.tree.line_count(written) is not None:
            return written
        if bare:
            return None
        index = self.index()
        return index.file_named(written) if index else None

    def _symbol(self, text: str, body: str) -> tuple[str, str] | None:
        """The code span ``text`` (``body`` within its backticks) linked to the one
        definition it names, and that definition's file; None when it names none or
        several. A symbol does not become the file named last: "`secret_key` is unset
        (line 318)" means the file being read."""
        named = _IDENTIFIER.fullmatch(body)
        index = self.index() if named else None
        definition = index.definition(named["name"]) if index and named else None
        if named is None or definition is None:
            return None
        url = self._url(Reference(definition.path, definition.line))
        if url is None:
            return None
        if not deceptive(body, url):
            return f"[{text}]({url})", definition.path
        # "DefaultJSONProvider.dumps" reads like a host name to Slack's deceptive-link
        # check (jobs/slack/mrkdwn.py): the last part alone is the link's label.
        name = named["name"]
        tail = _SEPARATOR.split(name)[-1]
        return f"`{name[: -len(tail)]}`[`{tail}{body[len(name) :]}`]({url})", definition.path

    def _url(self, ref: Reference) -> str | None:
        self.found += 1  # a file, a definition or lines of the file named last: a place, checked here
        if not self.tree.exists(ref):
            return None
        first, last = ref.lines or (None, None)
        self.linked += 1
        return self.host.file_url(self.commit, ref.path, first, last)

    def index(self) -> TreeIndex | None:
        if self._index is None:
            return None
        try:
            return self._index()
        except Exception:  # an index that fails leaves names plain; never an answer
            log.exception("tree index failed: bare names and symbols stay plain")
            self._index = None
            return None


def _items(line: str) -> list[_Item]:
    """The line's code spans, links and URLs, and in the text between them its plain
    paths and lines in words; in order, none overlapping."""
    items: list[_Item] = []
    pos = 0
    for match in _PROTECTED.finditer(line):
        items += _plain_items(line, pos, match.start())
        items.append(_Item(match.start(), match.end(), "code" if match["code"] else "opaque", match))
        pos = match.end()
    return items + _plain_items(line, pos, len(line))


def _plain_items(line: str, start: int, end: int) -> list[_Item]:
    found = [_Item(m.start(), m.end(), "lines", m) for m in _LINE_WORDS.finditer(line, start, end)]
    found += [
        _Item(m.start(), m.end(), "path", m)
        for m in _PLAIN_REF.finditer(line, start, end)
        if "/" in m["path"] or "." in m["path"]
    ]
    found.sort(key=lambda item: item.start)
    kept: list[_Item] = []
    for item in found:
        if not kept or item.start >= kept[-1].end:
            kept.append(item)
    return kept


def _file_like(written: str) -> bool:
    """Whether a reference that names no file could still mean one (``nope.py``, not ``dumps``)."""
    return "/" in written or "." in written


def _span_body(match: re.Match[str]) -> str:
    body = match["body"]
    if len(body) >= 2 and body.startswith(" ") and body.endswith(" ") and body.strip():
        body = body[1:-1]  # CommonMark strips one space each side
    return body


def _words(match: re.Match[str]) -> tuple[int, int]:
    first = int(match["s"])
    return first, int(match["e"]) if match["e"] else first
