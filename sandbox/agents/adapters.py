"""Agent adapters: how a question becomes a container command, and which parser reads it.

An adapter is the *runtime* half (what runs); the sandbox is the *deployment* half
(where it runs). Adding an agent means adding an adapter here, its settings section
(sandbox/agents/settings.py), its stream parser and an image in images/.

The agents the model gateway fronts (``gateway_fronted``) name the gateway ``provider``
whose API they speak: the Gemini CLI ``gemini``, Claude Code ``anthropic``, Codex CLI
``openai``. Each gets the gateway's per-question socket bridge as its base URL and the
question's token as its key (``with_endpoint``), never a real key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import SecretStr

from sandbox import images
from sandbox.agents.claude_stream import ClaudeStreamParser
from sandbox.agents.codex_stream import CodexStreamParser
from sandbox.agents.cursor_stream import CursorStreamParser
from sandbox.agents.gemini_stream import GeminiStreamParser
from sandbox.agents.jsonlines import StreamParser
from sandbox.agents.settings import AgentName, AgentSettings
from sandbox.spec import WORKSPACE


class Agent(ABC):
    name: ClassVar[AgentName]
    image_name: ClassVar[str]
    default_model: ClassVar[str | None]
    key_variable: ClassVar[str]

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings

    def image(self) -> str:
        return self.settings.section(self.name).image or images.tag(self.image_name)

    def model(self, override: str | None = None) -> str | None:
        return override or self.settings.agent_model or self.default_model

    # The gateway provider whose API this agent speaks (None: the gateway cannot front it).
    provider: ClassVar[str | None] = None

    @abstractmethod
    def command(self, model: str | None) -> list[str]:
        """The command line; the CLI reads the prompt from stdin (never argv, which
        `docker inspect` and the host's `ps` show)."""

    def env(self) -> dict[str, str]:
        """Environment for the container that is no secret (it shows in `docker inspect`)."""
        return {}

    @abstractmethod
    def secret_env(self) -> dict[str, str]:
        """API keys, for the container only: handed over on stdin (``SandboxSpec.secret_env``)."""

    @abstractmethod
    def endpoints(self) -> tuple[str, ...]:
        """The egress allowlist this agent needs by default."""

    @abstractmethod
    def parser(self) -> StreamParser: ...

    # Whether a model gateway can front this agent's LLM traffic (it takes a base URL).
    gateway_fronted: ClassVar[bool] = False

    def with_endpoint(self, base_url: str, key: str) -> Agent:
        """This agent talking to the LLM API at ``base_url`` with ``key`` (in askbox: the
        model gateway and a per-run token); only for ``gateway_fronted`` agents."""
        raise TypeError(f"{self.name} speaks a protocol no gateway fronts")


class CursorAgent(Agent):
    name = "cursor"
    image_name = "agent-cursor"
    default_model = None  # cursor-agent picks ("Auto")
    key_variable = "CURSOR_API_KEY"

    def command(self, model: str | None) -> list[str]:
        # -p without a prompt argument: cursor-agent reads the prompt from stdin.
        argv = ["cursor-agent", "-p", "--output-format", "stream-json", "--stream-partial-output"]
        argv += ["--trust", "--sandbox", "disabled"]
        if model:
            argv += ["--model", model]
        if self.settings.cursor.proxy == "proxychains":
            argv = ["proxychains4", "-q", *argv]
        return argv

    def secret_env(self) -> dict[str, str]:
        key = self.settings.cursor.api_key
        return {"CURSOR_API_KEY": key.get_secret_value()} if key else {}

    def endpoints(self) -> tuple[str, ...]:
        # Cursor's API hosts (api2/api3/repo42.cursor.sh, ...) and its auth and config hosts.
        return ("*.cursor.sh", "cursor.com", "*.cursor.com", "*.cursorapi.com")

    def parser(self) -> StreamParser:
        return CursorStreamParser(workspace=WORKSPACE)


class FrontedAgent(Agent):
    """An agent that takes any base URL and key: the gateway swaps the token for a real key."""

    gateway_fronted = True
    api_host: ClassVar[str]  # the provider's own host, when no gateway is in between

    def __init__(self, settings: AgentSettings, base_url: str | None = None, key: SecretStr | None = None) -> None:
        super().__init__(settings)
        self.base_url = base_url.rstrip("/") if base_url else None
        self.key = key

    def secret_env(self) -> dict[str, str]:
        return {self.key_variable: self.key.get_secret_value()} if self.key is not None else {}

    def endpoints(self) -> tuple[str, ...]:
        if self.base_url is None:
            return (self.api_host,)
        url = urlsplit(self.base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        host = f"[{url.hostname}]" if ":" in (url.hostname or "") else url.hostname
        return (f"{host}:{port}",)

    def with_endpoint(self, base_url: str, key: str) -> Agent:
        return type(self)(self.settings, base_url, SecretStr(key))


class GeminiAgent(FrontedAgent):
    name = "gemini"
    image_name = "agent-gemini"
    default_model = "gemini-2.5-flash"  # a fixed model: auto-routing makes extra calls
    key_variable = "GEMINI_API_KEY"
    provider = "gemini"
    api_host = "generativelanguage.googleapis.com"

    def command(self, model: str | None) -> list[str]:
        # No -p: with stdin not a terminal the CLI runs headless and takes the prompt from it
        # (up to 8 MiB; it gives up on stdin only if nothing is there 500 ms after it starts
        # reading, and the runner writes it as soon as the container starts).
        # yolo: tools run without asking (nobody can answer in headless mode); the
        # read-only mount and the sandbox, not the agent's politeness, keep the repo safe.
        return ["gemini", "-m", model or self.default_model, "-o", "stream-json", "--approval-mode", "yolo"]

    def env(self) -> dict[str, str]:
        return {"GOOGLE_GEMINI_BASE_URL": self.base_url} if self.base_url else {}

    def parser(self) -> StreamParser:
        return GeminiStreamParser(workspace=WORKSPACE)


class ClaudeAgent(FrontedAgent):
    """Claude Code, headless (images/agent-claude: managed settings, no telemetry)."""

    name = "claude"
    image_name = "agent-claude"
    default_model = "claude-sonnet-4-5"
    key_variable = "ANTHROPIC_API_KEY"
    provider = "anthropic"
    api_host = "api.anthropic.com"

    def command(self, model: str | None) -> list[str]:
        # -p without a prompt argument: Claude Code reads the prompt from stdin. Partial
        # messages stream the answer as it is written. Two tools only, both read-only in
        # effect (the mount is read-only): Read, and Bash to search and run the code.
        # bypassPermissions: nobody can approve a step in a headless run; the sandbox,
        # not the agent's politeness, keeps the repository safe (as the Gemini CLI's yolo).
        return [
            "claude",
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
            "--model",
            model or self.default_model,
            "--tools",
            "Bash,Read",
            "--permission-mode",
            "bypassPermissions",
            "--no-session-persistence",
            "--strict-mcp-config",
        ]

    def env(self) -> dict[str, str]:
        return {"ANTHROPIC_BASE_URL": self.base_url} if self.base_url else {}

    def parser(self) -> StreamParser:
        return ClaudeStreamParser(workspace=WORKSPACE)


class CodexAgent(FrontedAgent):
    """Codex CLI, ``codex exec`` (images/agent-codex: the system config names the gateway)."""

    name = "codex"
    image_name = "agent-codex"
    default_model = "gpt-5-codex"
    key_variable = "OPENAI_API_KEY"
    provider = "openai"
    api_host = "api.openai.com"

    def command(self, model: str | None) -> list[str]:
        # "-" reads the prompt from stdin; approvals are never asked for (headless); the
        # base URL of the "askbox" provider is this run's. Codex's own read-only policy runs
        # each command under bubblewrap, which needs user namespaces that askbox's sandbox
        # (rightly) does not grant: every command failed. The container is the sandbox, as
        # for the other agents: the repository is mounted read-only, there is no network.
        argv = [
            "codex",
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--ephemeral",
            "--color",
            "never",
            "-s",
            "danger-full-access",
            "-m",
            model or self.default_model,
        ]
        if self.base_url:
            argv += ["-c", f'model_providers.askbox.base_url="{self.base_url}/v1"']
        return [*argv, "-"]

    def parser(self) -> StreamParser:
        return CodexStreamParser(workspace=WORKSPACE)


AGENTS: dict[str, type[Agent]] = {a.name: a for a in (CursorAgent, GeminiAgent, ClaudeAgent, CodexAgent)}


def agent_for(name: str | None, settings: AgentSettings) -> Agent:
    name = name or settings.agent
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; known: {', '.join(AGENTS)}")
    return AGENTS[name](settings)
