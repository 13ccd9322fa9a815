"""Split a byte stream into lines without ever holding more than one capped line."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator


class LineSplitter:
    """Feed chunks, get complete lines. A line longer than ``max_bytes`` is cut at
    ``max_bytes`` and the rest of it, up to its newline, is dropped: memory stays
    bounded by ``max_bytes`` whatever the producer prints."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._dropping = False  # inside the unwanted tail of an over-long line
        self.truncated = 0

    def feed(self, chunk: bytes) -> Iterator[tuple[bytes, bool]]:
        start = 0
        while start < len(chunk):
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not self._dropping:
                room = self.max_bytes - len(self._buf)
                self._buf += piece[:room]
                if len(piece) > room:
                    self.truncated += 1
                    yield bytes(self._buf), True
                    self._buf.clear()
                    self._dropping = True
            if end < 0:
                return
            if self._dropping:
                self._dropping = False
            else:
                yield bytes(self._buf), False
                self._buf.clear()
            start = end + 1

    def flush(self) -> Iterator[tuple[bytes, bool]]:
        if self._buf and not self._dropping:
            yield bytes(self._buf), False
        self._buf.clear()
        self._dropping = False


class Tail:
    """The last ``max_bytes`` of text, kept line by line."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lines: deque[str] = deque()
        self._size = 0

    def add(self, line: str) -> None:
        line = line[-self.max_bytes :]
        self._lines.append(line)
        self._size += len(line) + 1
        while self._size > self.max_bytes and len(self._lines) > 1:
            self._size -= len(self._lines.popleft()) + 1

    def text(self) -> str:
        return "\n".join(self._lines)
