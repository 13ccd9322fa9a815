"""Every bench still runs: each script in bench/ end to end with ``--quick``.

A bench is run by hand, rarely; without this it rots unseen (bench/gateway.py once failed
at import for a whole release after a test module it borrowed from was renamed). The
numbers of a quick run mean nothing, so nothing here looks at them: only that the script
ran every path to its end (exit 0) and printed its report.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import labels
from tests.conftest import DEPLOYMENT

ROOT = Path(__file__).resolve().parents[2]
HELPERS = {"quick", "proxies"}  # modules the benches share, not benches
BENCHES = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem not in HELPERS)
# What each report's last lines must hold: the bench reached its summary.
REPORTS = {
    "agents": "time to first LLM request and memory per sandbox",
    "bot": "final event -> answer posted",
    "citations": "real references linked",
    "docker_filter": "ratio filtered / direct",
    "eval": "eval harness overhead per question, queue",
    "faults": '"faults": {"asked"',
    "gateway": "concurrent clients",
    "ingress": "acknowledgement latency and events per second per bot process",
    "pipeline": "questions/minute",
    "repos": "snapshot disk use",
    "sandbox_overhead": "ratio askbox / docker run",
    "scale": "per sandbox over all runs",
    "side_tasks": "agent: Gemini CLI",
}


def test_every_bench_has_a_report_to_check() -> None:
    assert sorted(REPORTS) == BENCHES


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "faults" else n for n in BENCHES])
def test_bench_runs_quick(name: str, docker_client, built_images, tmp_path: Path) -> None:
    proxies_before = _egress_proxies(docker_client)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = str(ROOT)  # the benches that import askbox's packages without the venv's path hook
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"bench/{name}.py --quick exited {done.returncode}:\n{output[-4000:]}"
    assert "--quick: tiny counts" in output
    assert REPORTS[name] in output, output[-4000:]
    # A bench leaves no egress proxy behind (they restart unless stopped).
    assert _egress_proxies(docker_client) - proxies_before == set()


def _egress_proxies(client) -> set[str]:
    """The ids of this test process's egress proxies."""
    found = client.containers.list(all=True, sparse=True, filters={"label": f"{labels.EGRESS_DEPLOYMENT}={DEPLOYMENT}"})
    return {str(c.id) for c in found}
