"""The layering, read from the imports: sandbox <- jobs <- bot, nothing runs back up; the
model gateway is a process of its own beside them.

Parsed with ast (no module is imported), so a violation fails here even when it sits in
a function body or a branch that the other tests never reach.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Which top-level modules each package must never import.
FORBIDDEN = {
    "sandbox": {"jobs", "bot", "gateway", "redis", "rq", "slack_sdk", "slack_bolt", "rq_dashboard"},
    "jobs": {"bot", "slack_bolt", "rq_dashboard", "flask"},
    # Its own process: no Slack, no queue, no Docker, no worker.
    "gateway": {"bot", "sandbox", "rq", "slack_sdk", "slack_bolt", "rq_dashboard", "docker", "flask"},
}
# What the gateway may take from jobs/: the one module of Redis key names, the settings
# tree's Redis section (every process connects to Redis the same way) and the tracing
# module (one trace per question across processes). Nothing of the worker.
GATEWAY_USES_OF_JOBS = {"jobs.keys", "jobs.settings", "jobs.tracing"}
# How the others reach the gateway: its client (and its section of the settings tree);
# `askbox gateway` starts its process.
GATEWAY_FACES = {"gateway.client", "gateway.settings", "gateway.process"}
# The only modules that talk to the Docker API themselves.
DOCKER_MODULES = {
    "sandbox/runner.py",
    "sandbox/reaper.py",
    "sandbox/egress.py",
    "sandbox/images.py",
    "sandbox/container_config.py",  # docker-py's types (Mount, Ulimit) only: the config, no calls
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
            # `from jobs import keys` uses the module jobs.keys (or a name of jobs; either way
            # the rules below read it as what it names).
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _within(module: str, allowed: set[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


def sources(package: str, root: Path = ROOT) -> list[Path]:
    return sorted((root / package).rglob("*.py"))


def layer_violations(package: str, root: Path = ROOT) -> list[str]:
    bad = [
        f"{path.relative_to(root)} imports {module}"
        for path in sources(package, root)
        for module in imported_modules(path)
        if module.split(".")[0] in FORBIDDEN[package]
    ]
    if package == "gateway":
        bad += [
            f"{path.relative_to(root)} imports {module}"
            for path in sources(package, root)
            for module in imported_modules(path)
            if module.split(".")[0] == "jobs" and module != "jobs" and not _within(module, GATEWAY_USES_OF_JOBS)
        ]
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_imports_back_up_the_layers(package: str) -> None:
    assert layer_violations(package) == []


@pytest.mark.parametrize(
    "planted",
    [
        "import bot.app",
        "from bot.ingress import handle",
        "from jobs.job import run",
        "from jobs import worker",
        "import sandbox.runner",
        "import rq",
    ],
)
def test_a_planted_import_into_the_gateway_fails_the_check(tmp_path: Path, planted: str) -> None:
    """The check above, on a copy of the gateway with one import planted: it must catch it."""
    shutil.copytree(ROOT / "gateway", tmp_path / "gateway")
    (tmp_path / "gateway" / "planted.py").write_text(f"def later():\n    {planted}\n")
    assert layer_violations("gateway", tmp_path) != []
    assert all("planted.py" in v for v in layer_violations("gateway", tmp_path))


def test_the_gateway_is_reached_only_through_its_client() -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {module}"
        for package in ("bot", "jobs", "sandbox")
        for path in sources(package)
        for module in imported_modules(path)
        if module.split(".")[0] == "gateway" and module != "gateway" and not _within(module, GATEWAY_FACES)
    ]
    assert bad == []


def test_docker_is_imported_only_where_runs_are_made() -> None:
    bad = [
        str(path.relative_to(ROOT))
        for package in ("bot", "gateway", "jobs", "sandbox")
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


def test_one_pipeline_starts_every_questions_agent() -> None:
    """The worker's job, `askbox ask --inline` and `askbox eval` run jobs/pipeline/; only its
    agent stage starts an agent (jobs/agent_runs.py wires one): an entry point with a run of
    its own would skip the stages (citations, cache, memory, triage, budget) again."""
    starters = {"jobs.agent_runs.agent_session", "jobs.agent_runs.model_route", "sandbox.agents.session.AgentSession"}
    found = sorted(
        str(path.relative_to(ROOT))
        for package in ("bot", "jobs")
        for path in sources(package)
        if imported_modules(path) & starters
    )
    assert found == ["jobs/agent_runs.py", "jobs/pipeline/agent.py"]
    entry_points = ["jobs/job.py", "bot/cli/ask_cmds.py", "jobs/evals/harness.py"]
    assert all("jobs.pipeline.answer" in imported_modules(ROOT / path) for path in entry_points)
