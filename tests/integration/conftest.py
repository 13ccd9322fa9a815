"""Fixtures shared by the integration tests: a Redis of the test's own, the fake Slack,
and `askbox bot` processes talking to it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from redis import Redis

from tests.fakes.slack import FakeSlack
from tests.integration.gateway_helpers import GatewayProcess, gateway_env
from tests.integration.pipeline_helpers import ASKBOX, RedisServer

CHANNEL = "C0FAKECHAN1"
ASKER, OTHER = "U0ASKER0001", "U0OTHER0001"


@pytest.fixture()
def fake():
    with FakeSlack() as slack:
        slack.add_user(ASKER, name="asker")
        slack.add_user(OTHER, name="other")
        yield slack


@pytest.fixture()
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.directory.mkdir()
    yield server.start()
    server.stop()


@pytest.fixture()
def redis(redis_server) -> Redis:
    return Redis.from_url(redis_server.url)


def bot_env(fake: FakeSlack, redis_url: str, repo: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # slack_sdk ignores NO_PROXY
    env.update(
        SLACK_BOT_TOKEN=fake.bot_token,
        SLACK_APP_TOKEN=fake.app_token,
        ASKBOX_SLACK_API_URL=fake.api_url,
        ASKBOX_REDIS_URL=redis_url,
        ASKBOX_REPOS=json.dumps({"demo": str(repo), "web": str(repo)}),
        ASKBOX_CHANNEL_REPOS=json.dumps({CHANNEL: "demo"}),
        ASKBOX_ADMINS='["U0ADMIN0001"]',
        # The channel's own repo is "demo"; "web" it may name too (jobs/access.py).
        ASKBOX_REPO_ACCESS=json.dumps({"web": {"channels": [CHANNEL], "dms": True}}),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture()
def bots(fake, redis_server, repo, tmp_path):
    started: list[subprocess.Popen] = []

    def start(count: int = 1) -> list[subprocess.Popen]:
        for _ in range(count):
            log = (tmp_path / f"bot-{len(started)}.log").open("w")
            started.append(
                subprocess.Popen(
                    [ASKBOX, "bot"], env=bot_env(fake, redis_server.url, repo), stdout=log, stderr=subprocess.STDOUT
                )
            )
        fake.wait_connections(len(started), timeout=30)
        return started

    yield start
    for proc in started:
        proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


GATEWAY_KEY = "AIzaSyREAL-gateway-key-0123456789abcdef"  # the real key: only the gateway holds it


@pytest.fixture()
def gateway():
    """Starts real `askbox gateway` processes: ``gateway(base_url, redis_url, **settings)``.
    Workers reach one through ``ASKBOX_GATEWAY_SOCKET_DIR=str(proc.socket_dir)``."""
    started: list[GatewayProcess] = []

    def start(base_url: str, redis_url: str, keys: tuple[str, ...] = (GATEWAY_KEY,), **settings: str) -> GatewayProcess:
        proc = GatewayProcess(gateway_env(base_url, list(keys), redis_url, **settings)).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
