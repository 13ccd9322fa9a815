"""Triage: a message that needs no code reading is answered at once, without the agent.

Thanks, greetings, "what can you do", questions about askbox itself, or a request to only
reformat the previous answer. The verdict is structured output (a JSON schema the API
enforces), never parsed from free text; a doubtful or failed verdict goes to the agent.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from jobs import tracing
from jobs.memory import Conversation
from jobs.side_tasks.side_call import GeminiCalls

FORCE_KEYWORD = "agent"
NOTE = (
    f"_Answered without reading the code. To send it to the agent anyway, start or end "
    f"your message with `{FORCE_KEYWORD}`._"
)
LAST_ANSWER_CHARS = 6000  # enough to reformat a usual answer; keeps triage cheap

SYSTEM = """\
You sort the messages sent to askbox, a Slack bot that answers questions about a code
repository by starting a coding agent that reads the code (slow: about a minute).
Decide whether the LATEST message needs that. needs_code is false ONLY when the message is
small talk (thanks, a greeting, goodbye), asks what askbox can do or how to use it, asks
about askbox itself, or only asks to reformat, shorten or translate the previous answer
(given below). Then write the reply in `reply` (Markdown, short, friendly).
Anything else, and whenever you are not sure: needs_code true and reply empty.

About askbox: mention it in a channel with a question about the code; options anywhere in
the message: repo=NAME, agent=claude|codex|gemini|cursor, model=NAME; start or end with `fresh` to skip
cached answers; reply in the thread to follow up, the earlier turns are kept."""


class Verdict(BaseModel):
    needs_code: bool = Field(description="true unless the message clearly needs no code reading")
    reply: str = Field(default="", description="the answer when needs_code is false, else empty")


@tracing.traced("askbox.side.triage")
def triage(calls: GeminiCalls, question: str, conversation: Conversation) -> str | None:
    """The direct reply to a message that needs no code reading; None: ask the agent."""
    if not calls.enabled("triage"):
        return None
    parts = []
    if conversation.summary:
        parts.append(f"Summary of the thread so far:\n{conversation.summary}")
    if conversation.turns:
        last = conversation.turns[-1]
        parts.append(f"Previous question:\n{last.question}\n\nPrevious answer:\n{last.answer[:LAST_ANSWER_CHARS]}")
    parts.append(f"LATEST message:\n{question}")
    verdict = calls.structured("triage", SYSTEM, "\n\n".join(parts), Verdict, calls.settings.triage_timeout)
    if verdict is None or verdict.needs_code or not verdict.reply.strip():
        return None
    return verdict.reply.strip()


def with_note(reply: str) -> str:
    """The reply as posted: with the footer that says how it was answered."""
    return f"{reply}\n\n{NOTE}"
