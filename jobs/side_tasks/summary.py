"""A two- or three-line summary on top of a long answer (and of one uploaded as a file)."""

from __future__ import annotations

from jobs import tracing
from jobs.side_tasks.side_call import GeminiCalls
from jobs.slack.mrkdwn import FILE_THRESHOLD

MAX_INPUT_CHARS = 100_000  # a longer answer is summarised from its beginning

SYSTEM = """\
Summarise the answer below, written by a coding agent about a code repository, in two or
three short lines for a reader deciding whether to read it all: the direct answer first,
then the key files or caveats. Plain sentences, no heading, no bullet list."""


@tracing.traced("askbox.side.summary")
def summarise(calls: GeminiCalls, question: str, answer: str) -> str | None:
    """The summary of a long answer; None for a short one, or when skipped."""
    if not calls.enabled("summary"):
        return None
    # An answer uploaded as a file always gets one, whatever the threshold says.
    if len(answer) <= min(calls.settings.summary_chars, FILE_THRESHOLD):
        return None
    prompt = f"Question:\n{question}\n\nAnswer:\n{answer[:MAX_INPUT_CHARS]}"
    return calls.text("summary", SYSTEM, prompt, calls.settings.gemini_timeout)
