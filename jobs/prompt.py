"""The prompt an agent gets: the answer's contract, the operators' instructions, the thread so far, the question.

The contract tells the agent which repository and commit it reads (read-only), where its
answer goes (Slack, or a terminal) and what renders there, and the one reference format
jobs/citations.py links (``path:line`` / ``path:start-end`` from the repository's root,
symbols by name in backticks); answer first, then the evidence; say so when the code does
not tell. Operators add their own words per repository (``instructions`` in an
``ASKBOX_REPOS`` entry) and per channel (``ASKBOX_CHANNEL_INSTRUCTIONS``), e.g. the
audience. ``askbox ask --explain`` prints the whole prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from jobs.settings import JobSettings

Destination = Literal["slack", "terminal"]

CONTRACT = """\
You are answering a question about the code repository "{repo}" {at}.
Its files are in the current directory (/workspace), mounted read-only: read the code to
answer; do not try to change files, install anything or run the project.

Answer the question first, in a sentence or two; then give the evidence from the code. If
the code does not tell, say so rather than guess.

Cite code in exactly this form, in backticks, with paths from the repository's root:
`path/to/file.py:42` for one line, `path/to/file.py:40-58` for a range, `path/to/file.py`
for a whole file; name a function, class or method in backticks by its name as written in
the code (`parse_config`, `Parser.parse`). Each reference is checked against this commit
and becomes a link to that file and those lines; a file or line that does not exist stays
plain text, so cite only what you have read.

{destination}

The repository may have its own instructions for agents (AGENTS.md and the like): follow
them about the code, but this message decides what the answer looks like."""

SLACK = """\
Your answer is posted in Slack. Write Markdown that Slack can show: **bold**, *italics*,
`code`, fenced code blocks, bullet and numbered lists, links. No tables (Slack shows them
as plain code, links lost), no HTML, no images; headings become bold lines. Be brief: up to
about 3,500 characters fits one message; a long answer is split, and beyond 12,000
characters it is posted as a file."""

TERMINAL = """\
Your answer is printed in a terminal and read as plain text: Markdown without tables or
HTML, brief."""


class Turn(BaseModel):
    question: str
    answer: str


@dataclass(frozen=True)
class Instruction:
    """Operators' words for the agent, and whose they are (shown with them)."""

    source: str  # e.g. "this repository", "this channel"
    text: str


@dataclass(frozen=True)
class Setting:
    """What the agent is told besides the question: what it reads, where the answer goes."""

    repo: str
    commit: str | None = None  # None: a directory that is no git checkout
    destination: Destination = "slack"
    instructions: tuple[Instruction, ...] = ()


def setting_for(
    jobs: JobSettings, repo: str, commit: str | None, channel: str | None = None, destination: Destination = "terminal"
) -> Setting:
    """A question's setting, with the operators' instructions for its repository and its
    channel, in that order (the channel's, nearer the question, are read last)."""
    found = []
    entry = jobs.repos.get(repo)
    if entry is not None and entry.instructions:
        found.append(Instruction("this repository", entry.instructions))
    if channel is not None and jobs.channel_instructions.get(channel):
        found.append(Instruction("this channel", jobs.channel_instructions[channel]))
    return Setting(repo=repo, commit=commit, destination=destination, instructions=tuple(found))


def contract(setting: Setting) -> str:
    at = f"at commit {setting.commit}" if setting.commit else "as the directory is now (no commit)"
    text = CONTRACT.format(repo=setting.repo, at=at, destination=SLACK if setting.destination == "slack" else TERMINAL)
    if setting.instructions:
        given = "\n".join(f"- For {i.source}: {i.text.strip()}" for i in setting.instructions)
        text += f"\n\nInstructions from the operators of this service:\n{given}"
    return text


def build_prompt(question: str, setting: Setting, history: Sequence[Turn] = (), summary: str = "") -> str:
    parts = [contract(setting)]
    if summary:
        parts.append(f"Summary of the conversation so far:\n{summary}")
    if history:
        turns = "\n\n".join(f"Q: {t.question}\nA: {t.answer}" for t in history)
        parts.append(f"Earlier in this thread:\n{turns}")
    parts.append(f"Question:\n{question.strip()}")
    return "\n\n".join(parts)
