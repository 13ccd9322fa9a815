"""The answer text of one run, assembled so that what is handed out never repeats."""

from __future__ import annotations


class AnswerBuffer:
    """Assembles the answer from streamed deltas and whole-message snapshots, so that
    the text handed out never repeats itself.

    Agents mix two kinds of text events: *deltas* (a new piece of text) and
    *snapshots* (a complete message: either the only copy of its text, when nothing
    was streamed, or a recap of text already streamed as deltas). A *segment* is the
    text since the last tool call: recaps cover one segment or the whole answer.
    """

    def __init__(self) -> None:
        self._text = ""
        self._segment = ""
        self._saw_deltas = False

    @property
    def text(self) -> str:
        return self._text

    def add_delta(self, text: str) -> str:
        self._saw_deltas = True
        self._append(text)
        return text

    def add_snapshot(self, text: str) -> str:
        """Returns the part of ``text`` not handed out yet ('' for a pure recap)."""
        new = self._unseen_part(text)
        self._append(new)
        return new

    def end_segment(self) -> None:
        self._segment = ""

    def _append(self, text: str) -> None:
        self._text += text
        self._segment += text

    def _unseen_part(self, snapshot: str) -> str:
        # A snapshot that extends the current segment: a recap of it (plus, rarely,
        # a tail the deltas missed), or a growing snapshot from an older CLI.
        if self._segment and snapshot.startswith(self._segment):
            return snapshot[len(self._segment) :]
        if not self._saw_deltas:
            # Nothing is streamed: every message is new text, even one that happens to
            # repeat earlier words ("... reply `done`." then "done").
            return snapshot
        if snapshot.startswith(self._text):
            return snapshot[len(self._text) :]  # a recap of the whole answer so far
        # While streaming, a snapshot only ever repeats streamed text (perhaps
        # re-trimmed); the final result event carries the authoritative answer anyway.
        return ""
