"""The allowed model names per agent (sandbox/agents/models.py) and their settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sandbox.agents.models import ModelRefused, allowed_models, check_model
from sandbox.agents.settings import AgentSettings, GeminiAgentSettings


@pytest.mark.parametrize("model", ["--yolo", "-m", "x; rm -rf /", "a b", "$(id)", "<!channel>", "gpt-5\n--yolo", ""])
def test_option_shell_and_control_characters_are_refused(model: str) -> None:
    with pytest.raises(ModelRefused, match="not a model name"):
        check_model("cursor", model, AgentSettings())


def test_only_listed_models_and_the_operators_default_run() -> None:
    settings = AgentSettings(
        gemini=GeminiAgentSettings(models=["gemini-2.5-pro"]), agent_model="gemini-exp-1", agent="gemini"
    )
    assert check_model("gemini", "gemini-2.5-pro", settings) == "gemini-2.5-pro"
    assert check_model("gemini", "gemini-exp-1", settings) == "gemini-exp-1"
    assert check_model("gemini", None, settings) is None  # the agent's default
    with pytest.raises(ModelRefused, match=r"`gemini-2.5-flash` is not available for gemini"):
        check_model("gemini", "gemini-2.5-flash", settings)
    assert "gpt-5" in allowed_models("cursor", AgentSettings())


def test_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASKBOX_CURSOR_MODELS", "auto, gpt-5")
    monkeypatch.setenv("ASKBOX_GEMINI_MODELS", '["gemini-2.5-pro"]')
    settings = AgentSettings()
    assert (settings.cursor.models, settings.gemini.models) == (["auto", "gpt-5"], ["gemini-2.5-pro"])
    monkeypatch.setenv("ASKBOX_GEMINI_MODELS", "gemini-2.5-pro,--yolo")
    with pytest.raises(ValidationError, match="GeminiAgentSettings"):
        AgentSettings()


def test_each_agent_has_its_own_section(monkeypatch: pytest.MonkeyPatch) -> None:
    """One model per agent: its variables keep their names, and the newcomers have theirs."""
    monkeypatch.setenv("ASKBOX_CLAUDE_MODELS", "claude-sonnet-4-5")
    monkeypatch.setenv("ASKBOX_CODEX_MODELS", '["qwen3-coder"]')
    monkeypatch.setenv("ASKBOX_CURSOR_IMAGE", "mirror/agent-cursor:1")
    monkeypatch.setenv("CURSOR_API_KEY", "cursor-key")
    settings = AgentSettings()
    assert settings.section("claude").models == ["claude-sonnet-4-5"]
    assert allowed_models("codex", settings) == ("qwen3-coder",)
    assert (
        settings.cursor.image == "mirror/agent-cursor:1" and settings.cursor.api_key.get_secret_value() == "cursor-key"
    )
    with pytest.raises(ModelRefused, match="not available for claude"):
        check_model("claude", "gpt-5", settings)
