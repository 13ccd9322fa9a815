"""Agent Markdown → Slack mrkdwn, and splitting long text into Slack-sized messages.

Agents answer in CommonMark/GFM; Slack's ``text`` and ``section`` blocks speak mrkdwn,
which differs just enough to garble an answer posted verbatim (``**bold**`` shows the
asterisks, ``[a](b)`` is not a link, headings and tables mean nothing).

Limits (decided here, used by the final message and the streams, jobs/slack/):

- ``PART_LIMIT`` 3,900: one answer message's ``text``. Slack truncates ``text`` at
  40,000 but advises keeping it under 4,000 characters; long messages are collapsed
  behind "Show more" and hard to read, so an answer is split into parts of this size.
- ``SECTION_LIMIT`` 3,000: the text of a ``section`` block (Block Kit's hard limit). The
  last part of an answer carries the footer and feedback buttons, so it is sent as
  blocks; its text is split again into sections of this size.
- ``FILE_THRESHOLD`` 12,000: beyond this an answer would be four or more messages (at
  about one per second per channel); it is uploaded as ``answer.md`` instead, with
  ``summarize_for_file`` as the message.

Entity escaping: ``&``, ``<`` and ``>`` are Slack's control characters everywhere in a
message, code included (Slack's own client stores ``a < b`` typed in a code block as
``a &lt; b`` and shows it as ``a < b``). So code content is escaped too; nothing else in
code is touched. This also keeps an agent from producing live ``<!channel>`` pings or
fake links.

Deceptive links: a link whose label names another URL or host than its target
(``[https://github.com/x](https://evil)``) is shown with its real target beside the
label, in mrkdwn (``to_mrkdwn``) and in the Markdown sent to Slack's streams
(``safe_markdown``), which gets the same escaping as the final message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

PART_LIMIT = 3_900
SECTION_LIMIT = 3_000
FILE_THRESHOLD = 12_000
SUMMARY_CHARS = 500

FENCE = "```"
# Room kept in every part for a closing "\n```" and a reopening "```\n".
_FENCE_COST = len(FENCE) + 1

# Private-use characters: never in real text, so they can stand in for finished pieces
# (code spans, links) while the rest of the line is rewritten.
_SLOT_OPEN, _SLOT_CLOSE, _BOLD = "\ue000", "\ue001", "\ue002"
_SLOT = re.compile(f"{_SLOT_OPEN}(\\d+){_SLOT_CLOSE}")


# --------------------------------------------------------------------------- escaping


def escape(text: str) -> str:
    """Slack's three control characters as entities; nothing else is entity-encoded."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_url(url: str) -> str:
    """A URL for Slack's ``<url|label>``: a raw "|" or ">" would end the URL early."""
    return url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C").replace(" ", "%20")


# --------------------------------------------------------------------------- inline


_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
_LINK = re.compile(
    r"(!?)\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?((?:[^()\s<>]|\([^()\s]*\))+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"
)
# No "|" in an autolink: "<url|label>" is Slack's own masked-link syntax, and written by an
# agent it stays visible text (escaped), never a live link with a label of its choosing.
_AUTOLINK = re.compile(r"<((?:https?|mailto|ftp):[^\s<>|]+)>")
_BACKSLASH = re.compile(r"\\([!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])")
# Emphasis content may not run past the next delimiter of its kind: a failed match then
# costs only the gap to that delimiter, so a long line of stray "*" stays linear.
_BOLD_ITALIC = re.compile(r"\*\*\*(?!\s)([^*]+?)(?<!\s)\*\*\*")
_BOLD_STARS = re.compile(r"\*\*(?!\s)((?:[^*]|\*(?!\*))+?)(?<!\s)\*\*")
_BOLD_UNDERSCORES = re.compile(r"(?<![\w_])__(?!\s)((?:[^_]|_(?!_))+?)(?<!\s)__(?![\w_])")
_ITALIC_STAR = re.compile(r"(?<![\w*])\*(?![\s*])([^*]+?)(?<![\s*])\*(?![\w*])")
_STRIKE = re.compile(r"~~(?!\s)((?:[^~]|~(?!~))+?)(?<!\s)~~")
_LINKABLE = re.compile(r"^(https?://|mailto:|ftp://)", re.IGNORECASE)


class _Inline:
    """One line's inline Markdown rewritten; finished pieces wait in numbered slots."""

    def __init__(self) -> None:
        self.slots: list[str] = []

    def keep(self, rendered: str) -> str:
        self.slots.append(rendered)
        return f"{_SLOT_OPEN}{len(self.slots) - 1}{_SLOT_CLOSE}"

    def restore(self, text: str) -> str:
        # Slots never nest (a link's label is rendered before it is kept), one pass suffices.
        return _SLOT.sub(lambda m: self.slots[int(m.group(1))], text)

    def code_span(self, match: re.Match[str]) -> str:
        body = match.group(2)
        if len(body) >= 2 and body.startswith(" ") and body.endswith(" ") and body.strip():
            body = body[1:-1]  # CommonMark strips one space each side
        return self.keep(f"`{escape(body)}`")

    def link(self, match: re.Match[str]) -> str:
        label_src, url = match.group(2), match.group(3)
        # Slack link labels are plain text: code spans lose their backticks, emphasis its marks.
        pieces = _SLOT.split(label_src)
        label = "".join(
            self.slots[int(p)].strip("`") if i % 2 else escape(_strip_emphasis(p)) for i, p in enumerate(pieces)
        ).strip()
        if not _LINKABLE.match(url):
            # A relative link (a repo path): Slack cannot follow it, so show where it points.
            shown = label or escape(url)
            return self.keep(shown if escape(url) == shown else f"{shown} (`{escape(url)}`)")
        if not label or label == escape(url):
            return self.keep(f"<{escape_url(url)}>")
        if deceptive(label, url):
            return self.keep(f"{label} (<{escape_url(url)}>)")
        return self.keep(f"<{escape_url(url)}|{label.replace('|', '¦')}>")

    def render(self, text: str) -> str:
        text = _CODE_SPAN.sub(self.code_span, text)
        text = _LINK.sub(self.link, text)
        text = _AUTOLINK.sub(lambda m: self.keep(f"<{escape_url(m.group(1))}>"), text)
        text = _BACKSLASH.sub(lambda m: self.keep(escape(m.group(1))), text)
        text = escape(text)
        # Bold goes through a placeholder so the italic pass cannot re-read its "*".
        text = _BOLD_ITALIC.sub(f"{_BOLD}_\\1_{_BOLD}", text)
        text = _BOLD_STARS.sub(f"{_BOLD}\\1{_BOLD}", text)
        text = _BOLD_UNDERSCORES.sub(f"{_BOLD}\\1{_BOLD}", text)
        text = _ITALIC_STAR.sub(r"_\1_", text)
        text = _STRIKE.sub(r"~\1~", text)
        return self.restore(text.replace(_BOLD, "*"))


# What in a label reads as a URL or host: a scheme, "www.", or dotted names with an
# alphabetic last part ("github.com", "github.com/x"). Not "user@host" (an e-mail).
_URLISH = re.compile(
    r"[a-z][a-z0-9+.-]*://[^\s<>()]+|(?<![\w@.-])(?:[a-z0-9-]+\.)+[a-z]{2,24}(?::\d+)?(?:/[^\s<>()]*)?",
    re.IGNORECASE,
)
# A bare "name.ext" with one of these is a file (``[app.py](permalink)``), not a host,
# though some are also top-level domains (.py, .md, .rs, .sh): a file link must not
# read as deceptive, and a host label needs a path, "www." or a scheme to mimic a URL.
_FILE_SUFFIXES = frozenset(
    "py js ts tsx jsx md rst txt json yaml yml toml ini cfg lock go rs rb sh c h cc cpp hpp java kt "
    "swift php cs html css scss sql xml gradle mk zig ex exs scala lua pl pm vue svelte dart proto tf "
    "nix erl hs ml clj sbt bzl cmake conf env".split()
)
# A citation's line suffix (":12", ":10-20", "#L10-L20"): "app.py:12" is a file, not a host and port.
_LINE_SUFFIX = re.compile(r"(?::\d+(?:-\d+)?|#L\d+(?:-L?\d+)?)$")


def _bare_host(text: str) -> str:
    host = urlsplit(text if "://" in text else f"//{text}").hostname or ""
    return host.lower().removeprefix("www.")


def deceptive(label: str, url: str) -> bool:
    """True when ``label`` names a URL or host that is not ``url``'s own host."""
    target = _bare_host(url)
    for match in _URLISH.finditer(label):
        token = match.group(0)
        # A name right after "/" in a relative path ("src/main.zig", "vendor/github.com/x")
        # is a path segment: a label mimicking a URL would start with the host or a scheme.
        before = label[: match.start()]
        in_path = before.endswith("/") and "//" not in before and not before.startswith("/")
        name = _LINE_SUFFIX.sub("", token)
        is_file = "/" not in name and name.rsplit(".", 1)[-1].lower() in _FILE_SUFFIXES
        if not (is_file or in_path) and _bare_host(token) != target:
            return True
    return False


def _strip_emphasis(text: str) -> str:
    return re.sub(r"(\*\*|__|~~)", "", text)


def inline(text: str) -> str:
    """One line of Markdown inline syntax as mrkdwn (code spans, links, emphasis)."""
    return _Inline().render(text)


_QUOTE_MARKS = re.compile(r"^(?:\s{0,3}>\s?)+")


def safe_markdown(markdown: str) -> str:
    """Markdown as the agent wrote it (for ``markdown_text``, which Slack renders itself),
    with the final message's protections: ``&``, ``<`` and ``>`` escaped everywhere, code
    included (a quote's leading ``>`` kept: alone it forms no control sequence), and a
    deceptive link shown with its real target."""
    out = []
    for line in markdown.split("\n"):
        quote = _QUOTE_MARKS.match(line)
        lead = quote.group(0) if quote else ""
        out.append(lead + _safe_line(line[len(lead) :]))
    return "\n".join(out)


def _safe_line(line: str) -> str:
    kept = _Inline()
    line = _CODE_SPAN.sub(lambda m: kept.keep(escape(m.group(0))), line)
    line = _LINK.sub(lambda m: kept.keep(_safe_link(m)), line)
    return kept.restore(escape(line))


def _safe_link(match: re.Match[str]) -> str:
    label, url = match.group(2), match.group(3)
    if not deceptive(label, url):
        return escape(match.group(0))
    return f"{escape(label)} ([{escape(url)}]({escape_url(url)}))"


def settled(markdown: str) -> str:
    """The start of ``markdown`` that can be sent before more text arrives: up to a link
    still being written on its last line (``[label](ur``), which, sent in two pieces,
    would be joined by Slack without ever having been checked whole."""
    line_start = markdown.rfind("\n") + 1
    last = markdown[line_start:]
    complete = [m.span() for m in _LINK.finditer(last)]
    for i, char in enumerate(last):
        if char == "[" and not any(start <= i < end for start, end in complete):
            return markdown[: line_start + i]
    return markdown


# --------------------------------------------------------------------------- blocks


_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})(?:\s+(.*?))?(?:\s+#+)?\s*$")
_SETEXT = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_RULE = re.compile(r"^\s{0,3}([-*_])(?:\s*\1){2,}\s*$")
_BULLET = re.compile(r"^(?P<indent>\s*)[-*+]\s+(?:\[(?P<task>[ xX])\]\s+)?(?P<body>.*)$")
_ORDERED = re.compile(r"^(?P<indent>\s*)(?P<num>\d{1,9})(?P<delim>[.)])\s+(?P<body>.*)$")
_QUOTE = re.compile(r"^\s{0,3}>\s?(?P<body>.*)$")
_TABLE_DELIM = re.compile(r"^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$")
_BULLETS = ("•", "◦", "▪")


def _code_block(lines: list[str]) -> list[str]:
    # A "```" inside the code would end Slack's block early: break it with a zero-width space.
    body = [escape(line).replace(FENCE, "`\u200b``") for line in lines]
    return [FENCE, *body, FENCE] if body else [FENCE, " ", FENCE]


def _table(rows: list[str]) -> list[str]:
    """A GFM table as an aligned code block: Slack has no tables, monospace keeps columns."""
    cells = [[_strip_emphasis(c.strip()).replace("`", "") for c in _table_cells(r)] for r in rows]
    cells = [row for i, row in enumerate(cells) if i != 1]  # the |---| delimiter row
    width = max(len(r) for r in cells)
    cells = [r + [""] * (width - len(r)) for r in cells]
    widths = [max(len(r[i]) for r in cells) for i in range(width)]
    lines = [" | ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return _code_block(lines)


def _table_cells(row: str) -> list[str]:
    row = row.strip()
    row = row.removeprefix("|")
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [c.replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)]


def _is_fence_close(line: str, fence: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and set(stripped) == {fence[0]} and len(stripped) >= len(fence)


def to_mrkdwn(markdown: str) -> str:
    """CommonMark-ish Markdown → Slack mrkdwn.

    Fenced code blocks stay ``` blocks (no language tag: Slack would show it as code);
    headings become bold lines, bullets "•" (nested "◦", "▪"), tables aligned code
    blocks, rules a line of "─". Emphasis, strikethrough, links and images are
    rewritten; nothing inside code spans or blocks is, apart from entity escaping.
    """
    lines = markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE_OPEN.match(line)
        if fence and not (fence["fence"][0] == "`" and "`" in fence["info"]):
            indent = len(fence["indent"])
            body: list[str] = []
            i += 1
            while i < len(lines) and not _is_fence_close(lines[i], fence["fence"]):
                text = lines[i]
                # Content is indented like its fence (e.g. inside a list item): drop that much.
                lead = len(text) - len(text.lstrip(" "))
                body.append(text[min(lead, indent) :])
                i += 1
            i += 1  # the closing fence (an unclosed block simply ends with the text)
            out.extend(_code_block(body))
            continue
        if "|" in line and i + 1 < len(lines) and _TABLE_DELIM.match(lines[i + 1]) and "-" in lines[i + 1]:
            rows = [line, lines[i + 1]]
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                rows.append(lines[i])
                i += 1
            out.extend(_table(rows))
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and _SETEXT.match(nxt) and not _block_start(line):
            out.append(_bold_line(line.strip()))
            i += 2
            continue
        out.append(_line(line))
        i += 1
    return "\n".join(out)


def _block_start(line: str) -> bool:
    """Lines that cannot be the text of a setext heading."""
    return bool(
        _HEADING.match(line)
        or _BULLET.match(line)
        or _ORDERED.match(line)
        or _QUOTE.match(line)
        or _RULE.match(line)
        or _FENCE_OPEN.match(line)
    )


def _bold_line(text: str) -> str:
    body = inline(_strip_emphasis(text))
    return f"*{body}*" if body.strip() else ""


def _line(line: str) -> str:
    if not line.strip():
        return ""
    if _RULE.match(line):
        return "──────────"
    heading = _HEADING.match(line)
    if heading:
        return _bold_line(heading.group(2) or "")
    bullet = _BULLET.match(line)
    if bullet:
        level = min(len(bullet["indent"].replace("\t", "    ")) // 2, len(_BULLETS) - 1)
        task = {" ": "☐ ", "x": "☑ ", "X": "☑ "}.get(bullet["task"] or "", "")
        return f"{'    ' * level}{_BULLETS[level]} {task}{inline(bullet['body'])}"
    ordered = _ORDERED.match(line)
    if ordered:
        level = len(ordered["indent"].replace("\t", "    ")) // 2
        return f"{'    ' * min(level, 2)}{ordered['num']}. {inline(ordered['body'])}"
    quote = _QUOTE.match(line)
    if quote:
        # Slack quotes one level only; ">" stays literal here because it is the quote mark.
        body = quote["body"]
        while _QUOTE.match(body):
            body = _QUOTE.match(body)["body"]  # type: ignore[index]
        return f"> {_line(body)}" if body.strip() else ">"
    # Trailing "\" or two spaces mark a hard break in Markdown; Slack keeps every newline anyway.
    text = line.rstrip()
    text = text[:-1] if text.endswith("\\") and not text.endswith("\\\\") else text
    return inline(text)


# --------------------------------------------------------------------------- splitting


@dataclass(frozen=True)
class _Piece:
    text: str
    joiner: str  # what joins it to the previous piece: "\n", or "" for a cut long line


def _fence_toggles(text: str) -> bool:
    # Slack opens/closes a code block at every ``` wherever it is; an odd count flips the state.
    return text.count(FENCE) % 2 == 1


_ENTITY = re.compile(r"&(?:amp|lt|gt);")


def _cut_line(line: str, size: int) -> list[str]:
    """A line longer than ``size`` in pieces, cut at a space when one is near the end,
    and never inside an entity (``&amp;``) or a ``<link|label>``."""
    pieces = []
    while len(line) > size:
        cut = size
        space = line.rfind(" ", int(size * 0.8), size)
        if space > 0:
            cut = space + 1
        for entity in _ENTITY.finditer(line, max(0, cut - 5), cut + 5):
            if entity.start() < cut < entity.end():
                cut = entity.start()
        lt = line.rfind("<", max(0, cut - 300), cut)
        if lt > 0 and ">" not in line[lt:cut]:
            cut = lt
        pieces.append(line[:cut])
        line = line[cut:]
    pieces.append(line)
    return pieces


def split_message(text: str, limit: int = PART_LIMIT) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters.

    Cuts go, in order of preference, at a blank line outside code, at a line break
    outside code, at a line break inside a code block (the part ends with a closing
    ``` and the next reopens it), and only for a single line longer than the limit
    inside a line. A cut made "by preference" must leave the part at least half full,
    so a long code block moves to the next part rather than being split needlessly.

    Joining the parts with "\\n" and removing each added "\\n```\\n```" pair gives back
    ``text`` (except where a too-long line had to be cut).
    """
    if limit < 4 * _FENCE_COST:
        raise ValueError(f"limit {limit} is too small to hold code fences")
    if len(text) <= limit:
        return [text]
    pieces: list[_Piece] = []
    for line in text.split("\n"):
        for j, chunk in enumerate(_cut_line(line, limit - 2 * _FENCE_COST)):
            pieces.append(_Piece(chunk, "\n" if j == 0 else ""))
    # in_code[k]: whether a code block is open just before piece k (and, for k == n, at the end).
    in_code = [False]
    for piece in pieces:
        in_code.append(in_code[-1] ^ _fence_toggles(piece.text))

    def size(start: int, end: int) -> int:
        body = len(pieces[start].text) + sum(len(p.joiner) + len(p.text) for p in pieces[start + 1 : end])
        return body + (_FENCE_COST if in_code[start] else 0) + (_FENCE_COST if in_code[end] else 0)

    def render(start: int, end: int) -> str:
        body = pieces[start].text + "".join(p.joiner + p.text for p in pieces[start + 1 : end])
        return ("```\n" if in_code[start] else "") + body + ("\n```" if in_code[end] else "")

    parts: list[str] = []
    start, n = 0, len(pieces)
    while start < n:
        end, length = start + 1, size(start, start + 1)
        while end < n:
            grown = length + len(pieces[end].joiner) + len(pieces[end].text)
            grown += (_FENCE_COST if in_code[end + 1] else 0) - (_FENCE_COST if in_code[end] else 0)
            if grown > limit:
                break
            end, length = end + 1, grown
        if end < n:
            end = _best_cut(pieces, in_code, start, end, limit, size)
        parts.append(render(start, end))
        start = end
    return parts


def _best_cut(pieces: list[_Piece], in_code: list[bool], start: int, end: int, limit: int, size) -> int:
    """Where to end the part [start, end) that fills the limit: see ``split_message``."""
    line_breaks = [k for k in range(end, start, -1) if pieces[k].joiner == "\n"]
    half = limit // 2
    for k in line_breaks:  # a blank line outside code
        if not in_code[k] and not pieces[k - 1].text.strip() and size(start, k) >= half:
            return k
    for k in line_breaks:  # any line break outside code
        if not in_code[k] and size(start, k) >= half:
            return k
    for k in line_breaks:  # a line break inside code, but not next to a fence (no empty blocks)
        if k - 1 > start and not _fence_toggles(pieces[k - 1].text) and not _fence_toggles(pieces[k].text):
            return k
    return end


# --------------------------------------------------------------------------- summaries


def _blocks_of(markdown: str) -> list[tuple[str, bool]]:
    """Paragraph-level blocks of Markdown as (text, is_code)."""
    blocks: list[tuple[str, bool]] = []
    current: list[str] = []
    fence: str | None = None
    for line in markdown.split("\n"):
        if fence is None:
            opened = _FENCE_OPEN.match(line)
            if opened and not (opened["fence"][0] == "`" and "`" in opened["info"]):
                if current:
                    blocks.append(("\n".join(current), False))
                current, fence = [line], opened["fence"]
            elif line.strip():
                current.append(line)
            elif current:
                blocks.append(("\n".join(current), False))
                current = []
        else:
            current.append(line)
            if _is_fence_close(line, fence):
                blocks.append(("\n".join(current), True))
                current, fence = [], None
    if current:
        blocks.append(("\n".join(current), fence is not None))
    return blocks


def summarize_for_file(markdown: str, max_chars: int = SUMMARY_CHARS) -> str:
    """The opening paragraph(s) of a long answer, up to about ``max_chars``, as Markdown.

    Code blocks are left out (they are rarely a summary and cannot be cut safely); a
    first paragraph longer than the budget is cut at a sentence or word with "…".
    """
    chosen: list[str] = []
    used = 0
    for text, is_code in _blocks_of(markdown.strip()):
        if is_code:
            if chosen:
                break
            continue
        if used + len(text) + 2 > max_chars:
            if not chosen:
                chosen.append(_cut_text(text, max_chars))
            break
        chosen.append(text)
        used += len(text) + 2
        # A heading alone says little: keep going until a paragraph is included.
        if not _HEADING.match(text) and used >= max_chars // 2:
            break
    return "\n\n".join(chosen).strip()


def _cut_text(text: str, max_chars: int) -> str:
    head = text[: max_chars - 1]
    sentence = max(head.rfind(". "), head.rfind("! "), head.rfind("? "))
    if sentence > max_chars // 2:
        return head[: sentence + 1]
    space = head.rfind(" ")
    head = head[:space] if space > max_chars // 2 else head
    # Never leave an odd backtick: an unclosed code span would swallow the rest.
    if head.count("`") % 2:
        head = head[: head.rfind("`")]
    return head.rstrip() + "…"


def open_fence(markdown: str) -> str | None:
    """The opening line (e.g. "```python") of a fenced code block still open at the end
    of ``markdown``, or None: a stream cut here must close it and the next reopen it."""
    fence: str | None = None
    opener = ""
    for line in markdown.split("\n"):
        if fence is None:
            opened = _FENCE_OPEN.match(line)
            if opened and not (opened["fence"][0] == "`" and "`" in opened["info"]):
                fence, opener = opened["fence"], line.strip()
        elif _is_fence_close(line, fence):
            fence = None
    return opener if fence is not None else None


def fence_closer(opener: str) -> str:
    """The line that closes the block ``opener`` opened ("```" for "```python")."""
    return re.match(r"`+|~+", opener).group(0)  # type: ignore[union-attr]
