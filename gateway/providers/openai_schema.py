"""The OpenAI request bodies the gateway forwards (Responses and Chat Completions): an
allowlist, as pydantic models.

Each model lists the fields Codex CLI and the OpenAI SDKs send (what Codex 0.171 sends is
in tests/fakes/AGENT_CLI_NOTES.md) and forbids every other one. What this refuses, by not
listing it:

- server-side tools: a tool is a ``function`` (or Codex's freeform ``custom`` tool, or a
  ``namespace`` of functions), never ``web_search`` / ``web_search_preview``,
  ``file_search``, ``code_interpreter``, ``image_generation``, ``computer_use_preview`` or
  ``mcp`` (a remote MCP server OpenAI would call); Chat Completions' ``web_search_options``
  is not a field;
- stored or uploaded content: ``store`` only ``false``; no ``previous_response_id``,
  ``conversation``, ``prompt`` (a stored template) or ``background``; an image is a
  ``data:`` URL, never an ``http(s)`` URL (fetched by OpenAI) or a ``file_id``;
  ``include`` only asks for encrypted reasoning (not the results of server-side tools);
- per-request billing switches: ``service_tier`` only ``auto`` / ``default``; media
  output (``modalities`` other than text, ``audio``).

Fields the gateway does not interpret (a function's parameters, a call's arguments, a
tool's output, a response format's schema, reasoning's encrypted content) are opaque JSON.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DataUrl = Annotated[str, Field(pattern=r"^data:")]  # content carried in the request itself


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- Responses API


class InputText(Message):
    type: Literal["input_text", "output_text", "summary_text", "reasoning_text"]
    text: str
    annotations: Any = None
    logprobs: Any = None


class InputImage(Message):
    type: Literal["input_image"]
    image_url: DataUrl
    detail: str | None = None


class Refusal(Message):
    type: Literal["refusal"]
    refusal: str


Content = Annotated[InputText | InputImage | Refusal, Field(discriminator="type")]


class MessageItem(Message):
    type: Literal["message"] = "message"
    id: str | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Content]
    status: str | None = None
    phase: Any = None


class FunctionCallItem(Message):
    type: Literal["function_call"]
    id: str | None = None
    call_id: str
    name: str
    arguments: str
    namespace: str | None = None
    status: str | None = None


class FunctionCallOutputItem(Message):
    type: Literal["function_call_output", "custom_tool_call_output"]
    id: str | None = None
    call_id: str
    output: str | list[Content]
    status: str | None = None


class CustomToolCallItem(Message):
    type: Literal["custom_tool_call"]
    id: str | None = None
    call_id: str
    name: str
    input: str
    status: str | None = None


class ReasoningItem(Message):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[InputText] = Field(default_factory=list)
    content: list[InputText] | None = None
    encrypted_content: str | None = None
    status: str | None = None


Item = Annotated[
    MessageItem | FunctionCallItem | FunctionCallOutputItem | CustomToolCallItem | ReasoningItem,
    Field(discriminator="type"),
]


class FunctionTool(Message):
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: Any = None
    strict: bool | None = None


class CustomTool(Message):
    """Codex's freeform tools (apply_patch): the agent runs them, the model only writes input."""

    type: Literal["custom"]
    name: str
    description: str | None = None
    format: Any = None


class NamespaceTool(Message):
    """A group of function tools under one name (Codex's sub-agent tools)."""

    type: Literal["namespace"]
    name: str
    description: str | None = None
    tools: list[FunctionTool]


ResponsesTool = Annotated[FunctionTool | CustomTool | NamespaceTool, Field(discriminator="type")]


class Reasoning(Message):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


class TextConfig(Message):
    format: Any = None
    verbosity: str | None = None


class StreamOptions(Message):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ResponsesRequest(Message):
    model: str
    input: str | list[Item]
    instructions: str | None = None
    tools: list[ResponsesTool] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    reasoning: Reasoning | None = None
    store: Literal[False] | None = None
    include: list[Literal["reasoning.encrypted_content"]] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    text: TextConfig | None = None
    truncation: Literal["auto", "disabled"] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    client_metadata: dict[str, str] | None = None
    service_tier: Literal["auto", "default"] | None = None


# --------------------------------------------------------- Chat Completions API


class TextPart(Message):
    type: Literal["text"]
    text: str


class ImageUrl(Message):
    url: DataUrl
    detail: str | None = None


class ImagePart(Message):
    type: Literal["image_url"]
    image_url: ImageUrl


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatFunction(Message):
    name: str
    arguments: str


class ChatToolCall(Message):
    id: str
    type: Literal["function"]
    function: ChatFunction


class ChatMessage(Message):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Part] | None = None
    name: str | None = None
    tool_calls: list[ChatToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None  # what OpenAI-compatible servers echo for reasoning models


class ChatFunctionSpec(Message):
    name: str
    description: str | None = None
    parameters: Any = None
    strict: bool | None = None


class ChatTool(Message):
    type: Literal["function"]
    function: ChatFunctionSpec


class ChatRequest(Message):
    model: str
    messages: list[ChatMessage]
    tools: list[ChatTool] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=8)
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: Any = None
    reasoning_effort: str | None = None
    store: Literal[False] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    modalities: list[Literal["text"]] | None = None
    service_tier: Literal["auto", "default"] | None = None
