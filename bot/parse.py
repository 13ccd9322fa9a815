"""What a Slack message asks: the question and its options."""

from __future__ import annotations

import re

from pydantic import BaseModel

_MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>")
_OPTION = re.compile(r"(?<!\S)(repo|agent|model)=(\S+)")

USAGE = """\
Ask me about the code: `@askbox how does the retry logic work?`
Options anywhere in the message: `repo=NAME` (which repository), `agent=claude|codex|gemini|cursor`, `model=NAME`.
Start or end with `fresh` to skip cached answers, with `agent` to have the agent answer even small talk.
Reply in the thread to follow up; I keep the context."""


class Parsed(BaseModel):
    text: str
    repo: str | None = None
    agent: str | None = None
    model: str | None = None
    fresh: bool = False
    help: bool = False


def parse(message: str) -> Parsed:
    text = _MENTION.sub(" ", message)
    options = {key: value for key, value in _OPTION.findall(text)}
    text = " ".join(_OPTION.sub(" ", text).split())
    words = text.split()
    fresh = bool(words) and "fresh" in {words[0].lower(), words[-1].lower()}
    if fresh:
        words = words[1:] if words[0].lower() == "fresh" else words[:-1]
        text = " ".join(words)
    return Parsed(
        text=text,
        repo=options.get("repo"),
        agent=options.get("agent"),
        model=options.get("model"),
        fresh=fresh,
        help=text.lower() in {"", "help", "?"},
    )
