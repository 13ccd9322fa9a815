"""The normalized event stream every agent adapter produces: the agents' vocabulary.

Each agent CLI (cursor-agent, Gemini CLI, Claude Code, Codex CLI) prints its own NDJSON dialect; the parsers in
this package translate it into these events so everything downstream (progress
display, answer posting, the CLI's own NDJSON output) deals with one vocabulary.
Events are JSON-serializable: ``event.model_dump_json()`` on the way out,
``parse_event(line)`` on the way back in.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from sandbox.outcome import Ending, HasEndings, carries_every_ending


class _Event(BaseModel):
    # Events are facts about something that already happened: never mutated after creation.
    model_config = ConfigDict(frozen=True)


class Started(_Event):
    """The agent session is up (cursor ``system/init``, Gemini ``init``)."""

    type: Literal["started"] = "started"
    session_id: str | None = None
    model: str | None = None


class TextDelta(_Event):
    """A piece of the assistant's answer text, in order. Thinking is never sent as text."""

    type: Literal["text_delta"] = "text_delta"
    text: str


class ToolStarted(_Event):
    """The agent called a tool. ``summary`` is short human text, e.g. "Read src/app.py"."""

    type: Literal["tool_started"] = "tool_started"
    call_id: str
    tool: str
    summary: str


class ToolFinished(_Event):
    """A tool call ended. Pairs with the ``ToolStarted`` of the same ``call_id``.

    ``detail`` is a short reason when ``ok`` is False (error text, "timed out", ...)."""

    type: Literal["tool_finished"] = "tool_finished"
    call_id: str
    tool: str
    summary: str
    ok: bool
    detail: str = ""


class Usage(BaseModel):
    """Token counts as the agent reports them; None where it does not say."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None


class Result(_Event):
    """The run finished with an answer. ``text`` is the complete final answer."""

    type: Literal["result"] = "result"
    text: str
    duration_ms: int | None = None
    usage: Usage | None = None


@carries_every_ending
class ErrorKind(HasEndings, StrEnum):
    """Why a run failed. The agent's own failures, classified from its words by its
    parser, then the ways the sandbox ends a run (``sandbox.outcome.Ending``)."""

    AUTH = "auth"  # missing or rejected API key
    QUOTA = "quota"  # usage limit, rate limit, RESOURCE_EXHAUSTED
    BAD_MODEL = "bad_model"  # the requested model does not exist or is not allowed
    UNTRUSTED_WORKSPACE = "untrusted_workspace"  # the CLI refuses to work in the folder
    CONTEXT_OVERFLOW = "context_overflow"  # the conversation no longer fits the model's context window
    EGRESS_BLOCKED = "egress_blocked"  # the egress proxy refused the LLM endpoint (policy)
    UNREACHABLE = "unreachable"  # the endpoint's name did not resolve, or the proxy could not connect to it
    AGENT = "agent"  # anything else the agent reported
    # How the sandbox ended the run rather than what the agent said; the meanings and
    # values are the sandbox's, so an error and the final message use the same word.
    TIMEOUT = Ending.TIMEOUT.value
    OOM = Ending.OOM.value
    CANCELLED = Ending.CANCELLED.value
    INFRA = Ending.INFRA.value


class AgentError(_Event):
    """The run failed. ``message`` is plain language, fit to show to a user."""

    type: Literal["error"] = "error"
    kind: ErrorKind
    message: str


class Diagnostic(_Event):
    """A line the parser could not interpret, or a non-fatal warning. Kept for logs."""

    type: Literal["diagnostic"] = "diagnostic"
    text: str


AgentEvent = Annotated[
    Started | TextDelta | ToolStarted | ToolFinished | Result | AgentError | Diagnostic,
    Field(discriminator="type"),
]

AGENT_EVENT_ADAPTER: TypeAdapter[AgentEvent] = TypeAdapter(AgentEvent)


def parse_event(data: str | bytes) -> AgentEvent:
    """One NDJSON line (as written by ``event.model_dump_json()``) back into an event."""
    return AGENT_EVENT_ADAPTER.validate_json(data)


def event_from_dict(data: object) -> AgentEvent:
    """An event from its ``model_dump()`` form (a decoded JSON object)."""
    return AGENT_EVENT_ADAPTER.validate_python(data)


def is_terminal(event: AgentEvent) -> bool:
    """Whether the event ends a run: nothing after it changes the outcome."""
    return isinstance(event, (Result, AgentError))
