"""docs/configuration.md, generated from the settings models: every section of the settings
tree (jobs/settings.py ``Settings``) and the bot's and dashboard's own, each field's
environment variable, default and description, plus the variables only compose reads
(from .env.example's first section).

Run ``python -m bot.config_doc > docs/configuration.md`` after changing a setting;
tests/unit/test_configuration_doc.py fails when the file drifts from the code or when its
variables and .env.example's differ. The walk over the tree (``sections``, ``variables``)
is the one tests/unit/test_env_example.py uses too.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from bot.dashboard import DashboardSettings
from bot.settings import BotSettings
from jobs.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
ENV_EXAMPLE = ROOT / ".env.example"
LINE = re.compile(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$")
# Test-only fault injection (jobs/crash_points.py): not a user's setting.
TEST_ONLY = {"ASKBOX_TEST_CRASH_AT"}
# What each section is for, in the order the document gives them.
TITLES = {
    "RedisSettings": "Redis",
    "JobSettings": "Repositories, the queue, memory and the worker's timings",
    "SandboxSettings": "Sandboxes",
    "AgentSettings": "Agents",
    "SlackSettings": "Slack, the worker's side",
    "GatewaySettings": "The model gateway",
    "GeminiSettings": "Side tasks (triage, compaction, summaries)",
    "DockerFilterSettings": "The Docker filter",
    "TracingSettings": "Tracing (OpenTelemetry)",
    "BotSettings": "The Slack bot",
    "DashboardSettings": "The dashboard",
}


def sections() -> list[type[BaseSettings]]:
    """Every section a process loads: the tree's, then the bot's and the dashboard's."""
    tree = [field.annotation for field in Settings.model_fields.values()]
    return [*tree, BotSettings, DashboardSettings]  # type: ignore[list-item]


def fields(section: type[BaseSettings]) -> Iterator[tuple[str, type[BaseSettings], FieldInfo]]:
    """(variable, its section, field) of each setting; a field that is a section of its own
    (each agent's) is walked in turn. The variable is the field's alias (the first, the one
    users set), or the prefix and its name."""
    prefix = section.model_config.get("env_prefix", "")
    for name, field in section.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings):
            yield from fields(field.annotation)
            continue
        choices = getattr(field.validation_alias, "choices", None)
        yield (str(choices[0]) if choices else f"{prefix}{name}".upper()), section, field


def variables(section: type[BaseSettings]) -> list[str]:
    return [variable for variable, _, _ in fields(section)]


def env_example(path: Path = ENV_EXAMPLE) -> dict[str, tuple[str, str]]:
    """Each variable of .env.example: (the comment line above it, its example value)."""
    lines = path.read_text().splitlines()
    found = {}
    for i, line in enumerate(lines):
        match = LINE.match(line)
        if match:
            above = lines[i - 1] if i else ""
            comment = above[2:] if above.startswith("# ") and not LINE.match(above) else ""
            found[match.group(1)] = (comment, match.group(2))
    return found


def compose_only(path: Path = ENV_EXAMPLE) -> list[str]:
    """The variables of .env.example's first section: read by compose.yaml, not askbox."""
    text = path.read_text()
    start = text.index("# ---- compose only")
    end = text.index("# ----", start + 1)
    return [m.group(1) for line in text[start:end].splitlines() if (m := LINE.match(line))]


def default(field: FieldInfo) -> str:
    """The default as a user would write it, or what decides it."""
    factory = field.default_factory
    if inspect.isfunction(factory) and factory.__name__ != "<lambda>" and factory.__doc__:
        return inspect.cleandoc(factory.__doc__)  # a computed default says how (e.g. root or not)
    value: Any = field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or value == "":
        return "(unset)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, (dict, list)):
        if not value:
            return "(none)"
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return f"`{','.join(value)}`"
        return f"`{json.dumps(value, separators=(', ', ': '))}`"
    return f"`{value}`"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    example = env_example()
    out = [
        "# Configuration",
        "",
        "<!-- Generated by `python -m bot.config_doc > docs/configuration.md` from the settings models",
        "     (their fields, defaults and descriptions); tests/unit/test_configuration_doc.py fails when",
        "     this file drifts from them or from .env.example. Edit the code, then regenerate. -->",
        "",
        "Every setting is an environment variable. Under compose, put them in `.env` beside",
        "`compose.yaml` (one line each; JSON where a value is a map or a list): compose passes",
        "each to the services that read it. On a host, export them for the `askbox` processes.",
        "Every process validates its settings when it starts and stops with one line naming the",
        "variable to fix; `askbox doctor` checks them against the running services.",
        "",
        "The README's quick start needs five: `ASKBOX_REDIS_PASSWORD`, `ASKBOX_DASHBOARD_USER`,",
        "`ASKBOX_DASHBOARD_PASSWORD`, `ASKBOX_REPOS` and a model key (`GEMINI_API_KEY`).",
        "`.env.example` lists every variable below, commented out at its default.",
        "",
        "## Compose only",
        "",
        "Read by compose.yaml (paths, ports, image builds), not by askbox itself.",
        "",
        "| variable | example | what |",
        "| --- | --- | --- |",
    ]
    for variable in compose_only():
        comment, value = example.get(variable, ("", ""))
        out.append(f"| `{variable}` | {f'`{cell(value)}`' if value else '(unset)'} | {cell(comment)} |")
    for section in sections():
        source = inspect.getsourcefile(section)
        where = Path(source).resolve().relative_to(ROOT) if source else section.__module__
        out += ["", f"## {TITLES.get(section.__name__, section.__name__)}", "", f"`{where}` `{section.__name__}`."]
        doc = inspect.getdoc(section)
        if doc and section.__doc__:  # its own docstring, not one inherited from BaseSettings
            out += ["", " ".join(doc.split("\n\n")[0].split())]
        out += ["", "| variable | default | what |", "| --- | --- | --- |"]
        for variable, _, field in fields(section):
            if variable in TEST_ONLY:
                continue
            what = field.description or example.get(variable, ("", ""))[0]
            out.append(f"| `{variable}` | {cell(default(field))} | {cell(what)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
