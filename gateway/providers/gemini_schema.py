"""The Gemini request bodies the gateway forwards: an allowlist, as pydantic models.

Each model lists the fields the Gemini CLI and google-genai send (their request builders,
and tests/fakes/GEMINI_CLI_NOTES.md) and forbids every other one. Upstream parses bodies
as protobuf JSON, which accepts a field under its camelCase name and its snake_case proto
name alike, so each field is accepted under both spellings here too (``alias_generator``
plus ``validate_by_name``), and an object giving both is refused: the two parsers would
pick different values.

What this refuses, by not listing it:

- server-side tools: a ``Tool`` holds ``functionDeclarations`` only, never
  ``googleSearch``, ``urlContext``, ``codeExecution``, ``googleSearchRetrieval``,
  ``fileSearch``, ``googleMaps``, ``computerUse`` or ``mcpServers`` (the model would
  fetch URLs, or run code, for whoever wrote the request), and ``toolConfig`` holds only
  ``functionCallingConfig``;
- ``cachedContent`` and every part referring to stored content (``fileData``, file URIs
  in function responses), and part kinds only those tools produce (``executableCode``,
  ``codeExecutionResult``);
- per-request billing or routing switches (``serviceTier``, ``store``, ``labels``), media
  output (``responseModalities`` other than TEXT, ``speechConfig``, ``imageConfig``).

Fields the gateway does not interpret (a function's parameters schema, a call's args, a
tool's response, a response schema) are opaque JSON: upstream validates them, and they
cannot make the model reach anything.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


class Message(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, frozen=True
    )

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        if isinstance(data, dict):
            seen: dict[str, str] = {}
            for key in data:
                canonical = to_camel(key) if isinstance(key, str) and "_" in key else key
                if canonical in seen:
                    raise ValueError(f"`{seen[canonical]}` and `{key}` are the same field; give it once")
                seen[canonical] = key
        return data


class Blob(Message):
    """Bytes carried in the request itself (an image the agent read): no reference out."""

    mime_type: str
    data: str


class FunctionCall(Message):
    id: str | None = None
    name: str
    args: dict[str, Any] | None = None
    partial_args: list[Any] | None = None
    will_continue: bool | None = None


class FunctionResponsePart(Message):
    inline_data: Blob  # never fileData: a function's output is sent, not referred to


class FunctionResponse(Message):
    id: str | None = None
    name: str
    response: dict[str, Any] | None = None
    parts: list[FunctionResponsePart] | None = None
    will_continue: bool | None = None
    scheduling: str | None = None


class Part(Message):
    text: str | None = None
    thought: bool | None = None
    thought_signature: str | None = None
    inline_data: Blob | None = None
    function_call: FunctionCall | None = None
    function_response: FunctionResponse | None = None


class Content(Message):
    role: str | None = None
    parts: list[Part] = Field(default_factory=list)


class FunctionDeclaration(Message):
    name: str
    description: str | None = None
    behavior: str | None = None
    parameters: Any = None
    parameters_json_schema: Any = None
    response: Any = None
    response_json_schema: Any = None


class Tool(Message):
    function_declarations: list[FunctionDeclaration]


class FunctionCallingConfig(Message):
    mode: str | None = None
    allowed_function_names: list[str] | None = None


class ToolConfig(Message):
    function_calling_config: FunctionCallingConfig | None = None


class ThinkingConfig(Message):
    include_thoughts: bool | None = None
    thinking_budget: int | None = None
    thinking_level: str | None = None


class GenerationConfig(Message):
    temperature: float | None = None
    top_p: float | None = None
    top_k: float | None = None
    candidate_count: int | None = Field(default=None, ge=1, le=8)
    max_output_tokens: int | None = Field(default=None, ge=1)
    stop_sequences: list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    response_mime_type: str | None = None
    response_schema: Any = None
    response_json_schema: Any = None
    response_logprobs: bool | None = None
    logprobs: int | None = None
    thinking_config: ThinkingConfig | None = None
    response_modalities: list[Literal["TEXT"]] | None = None
    media_resolution: str | None = None


class SafetySetting(Message):
    category: str
    threshold: str


class GenerateContentRequest(Message):
    contents: list[Content]
    system_instruction: Content | None = None
    tools: list[Tool] | None = None
    tool_config: ToolConfig | None = None
    generation_config: GenerationConfig | None = None
    safety_settings: list[SafetySetting] | None = None


class NamedGenerateContentRequest(GenerateContentRequest):
    """countTokens' nested form names its model; the gateway checks it is the session's."""

    model: str


class CountTokensRequest(Message):
    contents: list[Content] | None = None
    generate_content_request: NamedGenerateContentRequest | None = None
