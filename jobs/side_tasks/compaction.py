"""Thread compaction: turns that leave the memory window are folded into its summary.

Without it they would be dropped; the prompt carries summary + recent turns
(jobs/prompt.py). When the call fails the turns are dropped as before and the old
summary stays: a follow-up still works, with less context.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from jobs.memory import ThreadMemory
from jobs.prompt import Turn
from jobs.side_tasks.side_call import GeminiCalls

log = logging.getLogger(__name__)

SUMMARY_MAX_WORDS = 250

SYSTEM = f"""\
You keep the running summary of a conversation between a user and askbox, a bot that
answers questions about a code repository. Merge the summary so far and the turns below
into one updated summary of at most {SUMMARY_MAX_WORDS} words. Keep every fact, name,
number, file path, identifier and decision the user may refer back to; drop pleasantries.
Plain text, no preamble."""


def fold(calls: GeminiCalls, summary: str, dropped: Sequence[Turn]) -> str | None:
    """The summary with ``dropped`` folded in, or None (skipped)."""
    turns = "\n\n".join(f"Q: {t.question}\nA: {t.answer}" for t in dropped)
    prompt = f"Summary so far:\n{summary or '(none)'}\n\nTurns to fold in:\n{turns}"
    return calls.text("compaction", SYSTEM, prompt, calls.settings.gemini_timeout)


def remember(memory: ThreadMemory, thread_key: str, turn: Turn, calls: GeminiCalls, summary: str) -> None:
    """Append ``turn``; what falls out of the window goes into the summary (``summary``
    is the thread's summary as loaded for this question)."""
    dropped = memory.append(thread_key, turn)
    if not dropped or not calls.enabled("compaction"):
        return
    folded = fold(calls, summary, dropped)
    if folded is not None:
        memory.set_summary(thread_key, folded)
        log.info("folded %d turn(s) into the thread's summary", len(dropped))
