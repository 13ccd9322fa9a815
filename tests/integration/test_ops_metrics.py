"""The metrics the alerts read that askbox computes at scrape time, from a real Redis:
the Redis server's identity (the failover alert) and the highest share of a daily budget
used (the budget alert). Served by jobs/metrics.py's ``serve_metrics`` in a process of its
own (prometheus_client's mode is fixed at its first import) and scraped over HTTP, as
Prometheus would."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

from jobs import keys
from tests.conftest import REDIS_TEST_URL
from tests.integration.pipeline_helpers import ROOT

SERVE = """
import sys, time
from redis import Redis
from jobs import metrics
server = metrics.serve_metrics(0, Redis.from_url(sys.argv[1]), ["askbox-default"],
                               {"user": (1000.0, 0.0), "channel": (0.0, 0.0)})
print(server.port, flush=True)
time.sleep(120)
"""


def scrape(redis_url: str) -> str:
    proc = subprocess.Popen([sys.executable, "-c", SERVE, redis_url], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return response.read().decode()
    finally:
        proc.kill()
        proc.wait()


def test_budget_share_and_redis_identity_are_exported(redis_client) -> None:
    redis_client.hset(keys.daily_usage("user", "U0HEAVY"), mapping={"tokens": 850, "cost_usd": 1.5})
    redis_client.hset(keys.daily_usage("user", "U0LIGHT"), mapping={"tokens": 100, "cost_usd": 0.1})
    redis_client.hset(keys.daily_usage("user", "U0OLD", "2000-01-01"), mapping={"tokens": 5000})  # not today
    text = scrape(REDIS_TEST_URL)
    assert 'askbox_budget_used_ratio{scope="user"} 0.85' in text, text
    assert 'scope="channel"' not in text  # no channel budget: no series
    run_id = redis_client.info("server")["run_id"]
    assert f'askbox_redis_server_info{{role="master",run_id="{run_id}"}} 1.0' in text, text
