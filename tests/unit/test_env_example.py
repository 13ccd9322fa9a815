""".env.example lists every setting with a one-line comment, and compose passes each on.

Walks every section of the settings tree (and the bot's and dashboard's own sections;
the walk is bot/config_doc.py's, which generates docs/configuration.md):
a field added without its line here fails this test, so the file cannot drift.
"""

from __future__ import annotations

import re
from pathlib import Path

from bot.config_doc import TEST_ONLY, sections, variables

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^#? ?([A-Z][A-Z0-9_]*)=")
# Settings compose sets itself rather than passing through from .env (compose.yaml says why).
SET_BY_COMPOSE = {"ASKBOX_DASHBOARD_PORT"}  # the dashboard listens on 9180 behind its relay
# Read by commands run on the host only: `askbox images build --offline` (compose's images
# service never builds offline; it builds on a base the host made).
HOST_ONLY = {"ASKBOX_DEBIAN_MIRROR"}


def listed() -> dict[str, str]:
    """Each variable of .env.example and the comment line just above it."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    found = {}
    for i, line in enumerate(lines):
        match = LINE.match(line)
        if match:
            above = lines[i - 1] if i else ""
            found[match.group(1)] = above if above.startswith("# ") and not LINE.match(above) else ""
    return found


def test_every_setting_is_listed_with_a_comment() -> None:
    example = listed()
    # redis, jobs, sandbox, agents, slack, gateway, gemini, docker filter, tracing, bot, dashboard
    assert len(sections()) == 11
    missing = [v for s in sections() for v in variables(s) if v not in example and v not in TEST_ONLY]
    assert missing == [], f"add to .env.example, with a one-line comment: {missing}"
    uncommented = [v for v, comment in example.items() if len(comment) < 10]
    assert uncommented == [], f"each needs a one-line comment above it: {uncommented}"


def test_compose_passes_every_setting_on() -> None:
    """A setting in .env that compose.yaml does not name would be silently ignored."""
    compose = "".join(path.read_text() for path in sorted(ROOT.glob("compose*.yaml")))  # the override's too
    named = set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", compose))
    ignored = [v for v in listed() if v not in named and v not in SET_BY_COMPOSE | HOST_ONLY]
    assert ignored == [], f"compose.yaml must pass these to the services that read them: {ignored}"


def test_the_check_sees_a_missing_setting() -> None:
    """The walk really reads field names: a section's known variable is found, a made-up one is not."""
    assert "ASKBOX_SANDBOX_MEMORY" in variables(sections()[2]) and "CURSOR_API_KEY" in variables(sections()[3])
    assert "ASKBOX_NOT_A_SETTING" not in listed()
