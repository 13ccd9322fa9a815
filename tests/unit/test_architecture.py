"""The layering, read from the imports: sandbox <- jobs <- bot, nothing runs back up.

Parsed with ast (no module is imported), so a violation fails here even when it sits in
a function body or a branch that the other tests never reach.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Which top-level modules each package must never import.
FORBIDDEN = {
    "sandbox": {"jobs", "bot", "redis", "rq", "slack_sdk", "slack_bolt", "rq_dashboard"},
    "jobs": {"bot", "slack_bolt", "rq_dashboard", "flask"},
}
# The only modules that talk to the Docker API themselves.
DOCKER_MODULES = {
    "sandbox/runner.py",
    "sandbox/reaper.py",
    "sandbox/egress.py",
    "sandbox/images.py",
    "sandbox/docker_filter/client.py",  # the worker's side of the filter's own endpoints
    "bot/cli/images_cmds.py",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_imports_back_up_the_layers(package: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sources(package)
        for module in imported_modules(path)
        if module.split(".")[0] in FORBIDDEN[package]
    ]
    assert bad == []


def test_docker_is_imported_only_where_runs_are_made() -> None:
    bad = [
        str(path.relative_to(ROOT))
        for package in ("bot", "jobs", "sandbox")
        for path in sources(package)
        if str(path.relative_to(ROOT)) not in DOCKER_MODULES
        and any(m.split(".")[0] == "docker" for m in imported_modules(path))
    ]
    assert bad == []


def test_the_bot_process_does_not_load_docker() -> None:
    # What `askbox bot` imports, in a fresh interpreter: the Slack side needs no Docker.
    probe = (
        "import sys; import bot.cli, bot.app, bot.serve, bot.ingress, bot.dashboard; "
        "from bot.cli import service_cmds; "
        "print(sorted(m for m in sys.modules if m == 'docker' or m.startswith('docker.')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
