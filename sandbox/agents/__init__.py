"""Stream parsers for agent CLIs, and the helpers they share.

Each parser turns one run's stdout, line by line, into ``sandbox.events`` events:

    parser = CursorStreamParser()
    for line in stdout_lines:
        events = parser.feed(line)
        ...
        if parser.done:  # the answer is in; stop the container
            break
    events = parser.finish(exit_code, stderr_tail)

A parser never raises on odd input: unknown event types are ignored and lines that are
not JSON come back as ``Diagnostic`` events.
"""

from sandbox.agents.common import EGRESS_BLOCKED_MESSAGE, AnswerBuffer, StreamParser, classify
from sandbox.agents.cursor_stream import CursorStreamParser
from sandbox.agents.gemini_stream import GeminiStreamParser

__all__ = [
    "EGRESS_BLOCKED_MESSAGE",
    "AnswerBuffer",
    "CursorStreamParser",
    "GeminiStreamParser",
    "StreamParser",
    "classify",
]
