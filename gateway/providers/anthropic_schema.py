"""The Anthropic Messages request bodies the gateway forwards: an allowlist, as pydantic models.

Each model lists the fields Claude Code and the Anthropic SDKs send (what Claude Code
2.1 sends is in tests/fakes/AGENT_CLI_NOTES.md) and forbids every other one. What this
refuses, by not listing it:

- server-side tools: a tool is a client tool (a name, a description, an input schema),
  never a typed one (``web_search_*``, ``web_fetch_*``, ``code_execution_*``,
  ``tool_search_tool_*``, ``memory_*``, ``computer_*``...), so the model cannot fetch a URL
  or run code on Anthropic's side for whoever wrote the request; ``mcp_servers`` (remote
  MCP servers Anthropic would call) and ``container`` are not fields;
- content referring to anything outside the request: an image or a document is
  ``base64`` data (or a document's plain text), never a ``url`` (Anthropic would fetch
  it) or a ``file`` (the Files API); server-tool result blocks are not block types;
- per-request billing switches: ``service_tier`` only as ``auto`` / ``standard_only``.

``cache_control`` (prompt caching of the request's own content) is allowed: Claude Code
marks its system prompt and last message for caching, and it refers to nothing stored
elsewhere. Fields the gateway does not interpret (a tool's input schema, a tool call's
input, a thinking block's signature) are opaque JSON: they cannot make the model reach
anything.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CacheControl(Message):
    type: Literal["ephemeral"]
    ttl: str | None = None


class Base64Source(Message):
    type: Literal["base64"]
    media_type: str
    data: str


class PlainTextSource(Message):
    type: Literal["text"]
    media_type: str
    data: str


class TextBlock(Message):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: Any = None


class ImageBlock(Message):
    type: Literal["image"]
    source: Base64Source  # never a url (fetched by Anthropic) or a file id
    cache_control: CacheControl | None = None


class DocumentBlock(Message):
    type: Literal["document"]
    source: Annotated[Base64Source | PlainTextSource, Field(discriminator="type")]
    title: str | None = None
    context: str | None = None
    citations: Any = None
    cache_control: CacheControl | None = None


class ToolUseBlock(Message):
    type: Literal["tool_use"]
    id: str
    name: str
    input: Any = None
    cache_control: CacheControl | None = None


ResultContent = Annotated[TextBlock | ImageBlock | DocumentBlock, Field(discriminator="type")]


class ToolResultBlock(Message):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ResultContent] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


class ThinkingBlock(Message):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(Message):
    type: Literal["redacted_thinking"]
    data: str


Block = Annotated[
    TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class ChatMessage(Message):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class Tool(Message):
    """A client tool: the model asks, the agent runs it. No ``type`` but ``custom``."""

    type: Literal["custom"] | None = None
    name: str
    description: str | None = None
    input_schema: Any = None
    cache_control: CacheControl | None = None
    defer_loading: bool | None = None
    strict: bool | None = None
    input_examples: Any = None


class ToolChoice(Message):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(Message):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None
    display: str | None = None


class Metadata(Message):
    user_id: str | None = None


class ContextEdit(Message):
    """Clearing old thinking or tool results from the context (no outside reference)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str = Field(pattern=r"^clear_(thinking|tool_uses)_\d{8}$")


class ContextManagement(Message):
    edits: list[ContextEdit] | None = None


class OutputConfig(Message):
    effort: str | None = None
    format: Any = None  # a JSON schema for structured output


class CountTokensRequest(Message):
    model: str
    messages: list[ChatMessage]
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    context_management: ContextManagement | None = None
    output_config: OutputConfig | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    metadata: Metadata | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
