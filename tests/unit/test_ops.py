"""The operator's files in ops/: the Prometheus alert rules pass promtool's checks and their
unit tests, the Grafana dashboard's queries parse, and every metric either names is one
askbox's code registers (jobs/metrics.py, gateway/metrics.py), so a renamed metric cannot
leave an alert that never fires or a panel that stays empty.

promtool comes with Debian's `prometheus` package (.ci/run installs it); without it these
tests fail in CI and skip elsewhere, saying so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "ops" / "prometheus"
DASHBOARD = ROOT / "ops" / "grafana" / "askbox.json"
METRIC = re.compile(r"\baskbox_[a-z0-9_]+\b")
# Prometheus's own, not askbox's: the scrape's health of each target.
BUILTIN = {"up"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        unavailable("promtool", "not installed (apt-get install -y prometheus)")
    assert path is not None
    return path


def run(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def exposed(family: Any) -> set[str]:
    """The sample names a metric family is exposed as (what PromQL names)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
        "gauge": ("",),
    }
    return {family.name + suffix for suffix in suffixes.get(family.type, ("",))}


def registered() -> set[str]:
    """Every metric the worker's and the gateway's /metrics can expose, from the code itself."""
    from prometheus_client import REGISTRY

    import gateway.metrics  # noqa: F401 - registers the gateway's metrics on import
    from jobs import metrics
    from jobs.queue import QUEUE_NAMES

    metrics._ensure_metrics()
    families = list(REGISTRY.collect())
    redis = Redis()  # never connected: describe() reads no data
    for collector in (
        metrics.QueueDepthCollector(redis, QUEUE_NAMES),
        metrics.FeedbackCollector(redis),
        metrics.RedisServerCollector(redis),
        metrics.BudgetCollector(redis, {}),
    ):
        families += list(collector.describe())
    return {name for family in families for name in exposed(family) if name.startswith("askbox_")}


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def unknown(text: str) -> list[str]:
    return sorted(set(METRIC.findall(text)) - registered())


def test_the_alert_rules_are_valid() -> None:
    checked = run("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout


def test_the_alert_rules_unit_tests_pass() -> None:
    tested = run("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_the_unit_tests_would_catch_a_changed_rule(tmp_path: Path) -> None:
    """A threshold moved makes promtool's tests fail: they test the rules, not themselves."""
    for name in ("alerts.yml", "alerts.test.yml"):
        shutil.copy(PROMETHEUS / name, tmp_path / name)
    rules = tmp_path / "alerts.yml"
    rules.write_text(rules.read_text().replace("> 0.8", "> 0.95"))
    tested = run("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert tested.returncode != 0 and "AskboxBudgetNearLimit" in tested.stdout + tested.stderr


def test_the_example_scrape_configuration_is_valid() -> None:
    checked = run("check", "config", "prometheus.example.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    jobs = set(re.findall(r"job_name: (\S+)", (PROMETHEUS / "prometheus.example.yml").read_text()))
    used = set(re.findall(r'job="([^"]+)"', (PROMETHEUS / "alerts.yml").read_text() + DASHBOARD.read_text()))
    assert used == jobs == {"askbox-worker", "askbox-gateway"}


def test_every_metric_the_rules_name_is_registered() -> None:
    assert unknown((PROMETHEUS / "alerts.yml").read_text()) == []
    assert unknown((PROMETHEUS / "alerts.test.yml").read_text()) == []


def test_every_metric_the_dashboard_names_is_registered() -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    assert unknown("\n".join(queries)) == []
    # Each panel reads askbox's metrics or Prometheus's own.
    names = {
        name
        for query in queries
        for name in re.findall(r"\b([a-z_][a-z0-9_]*)(?:\{|\[|\))", re.sub(r"by \([^)]*\)", "", query))
    }
    assert names - registered() - BUILTIN - {"rate", "increase", "sum", "max", "count", "histogram_quantile"} == set()


def test_the_dashboards_queries_parse(tmp_path: Path) -> None:
    """promtool parses each panel's query as a recording rule's expression."""
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, query in enumerate(dashboard_queries()):
        rules += [f"      - record: askbox_dashboard_query_{i}", f"        expr: {json.dumps(query)}"]
    (tmp_path / "queries.yml").write_text("\n".join(rules) + "\n")
    checked = run("check", "rules", "queries.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_is_importable() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "askbox" and board["templating"]["list"][0]["type"] == "datasource"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["title"] and panel["targets"], panel
        assert panel["datasource"]["uid"] == "${datasource}"


def test_a_metric_the_code_does_not_register_is_caught() -> None:
    """The check above really compares: a renamed metric is reported."""
    assert unknown("rate(askbox_questions_total[5m]) + askbox_questions_renamed_total") == [
        "askbox_questions_renamed_total"
    ]
    assert "askbox_gateway_breaker_opened_total" in registered()
    assert "askbox_redis_server_info" in registered() and "askbox_budget_used_ratio" in registered()


@pytest.mark.parametrize("name", ["askbox_queue_depth", "askbox_queue_wait_seconds_bucket", "askbox_questions_total"])
def test_the_worker_exposes_what_the_alerts_read(name: str) -> None:
    assert name in registered()
