"""Which models an agent may be asked to run, checked wherever a requested name enters.

A model name ends up in the agent's argv (``--model M`` / ``-m M``), so a name a user
typed (``model=`` in Slack, ``--model`` in the CLI) or a job forged in Redis carries must
be a plain name from the agent's allowed list (``ASKBOX_<AGENT>_MODELS``: cursor, gemini,
claude, codex; plus the operator's own ``ASKBOX_AGENT_MODEL``): never an option
(``--yolo``), never shell or control characters. The bot refuses with a message for the
asker; the worker checks again, since whoever can write to Redis skips the bot.
"""

from __future__ import annotations

import re

from sandbox.agents.settings import MODEL_NAME, AgentName, AgentSettings


class ModelRefused(ValueError):
    """A requested model that may not run; the message is for the asker."""


def allowed_models(agent: AgentName, settings: AgentSettings) -> tuple[str, ...]:
    listed = settings.section(agent).models
    default = (settings.agent_model,) if settings.agent_model else ()  # the operator's own choice
    return tuple(dict.fromkeys([*listed, *default]))


def check_model(agent: AgentName, model: str | None, settings: AgentSettings) -> str | None:
    """``model`` when ``agent`` may run it (None stays None: the agent's default)."""
    if model is None:
        return None
    allowed = allowed_models(agent, settings)
    known = ", ".join(f"`{m}`" for m in allowed) or "none (only the default)"
    if not re.fullmatch(MODEL_NAME, model):
        # Not echoed: it may hold Slack control sequences or anything else.
        raise ModelRefused(f"That is not a model name. Models for {agent}: {known}.")
    if model not in allowed:
        raise ModelRefused(f"The model `{model}` is not available for {agent}. Available: {known}.")
    return model
