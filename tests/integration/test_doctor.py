"""`askbox doctor` against each broken set-up a new user met (issue 21), and a healthy one.

A healthy deployment of the test's own: a redis-server, a real `askbox worker` (the Gemini
agent, built images), a real `askbox gateway` against the fake Gemini API, a git checkout
and the fake Slack with the scopes docs/slack.md asks for. `askbox doctor` passes there
(exit 0, no FAIL line). Then each set-up is broken in one way only, and doctor must print
exactly one FAIL line for it, naming the fix, and exit 1. `--config` (what compose's
preflight runs) is checked the same way for the settings a new user got wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rq import Worker

from tests.fakes.gemini_api import FakeGeminiAPI
from tests.fakes.slack import BOT_SCOPES, FakeSlack
from tests.integration.gateway_helpers import GatewayProcess, gateway_env, provider_env
from tests.integration.pipeline_helpers import ASKBOX, ROOT, RedisServer, Workers, free_port, wait_for, worker_env

pytestmark = [pytest.mark.docker, pytest.mark.redis]
# Never the user's: every variable doctor reads comes from the deployment below.
OURS = ("ASKBOX_", "CURSOR_", "GEMINI_", "ANTHROPIC_", "OPENAI_", "SLACK_", "DOCKER_HOST")


@dataclass
class Deployment:
    env: dict[str, str]
    repos_dir: Path
    workers: Workers
    gateway: GatewayProcess
    slack: FakeSlack

    def doctor(self, *args: str, **changes: str | None) -> tuple[int, list[str], str]:
        env = {**self.env, **{k: v for k, v in changes.items() if v is not None}}
        for name in [k for k, v in changes.items() if v is None]:
            env.pop(name, None)
        done = subprocess.run(
            [ASKBOX, "doctor", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, done.stdout.splitlines(), done.stderr


def _git_checkout(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "README.md").write_text("# web\n")
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for argv in (["init", "-q"], ["add", "."], ["commit", "-qm", "web"]):
        subprocess.run([*git, *argv], check=True, capture_output=True)


@pytest.fixture(scope="module")
def deployment(
    built_images: dict[str, str], egress_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("doctor")
    (tmp / "redis").mkdir()
    redis = RedisServer(tmp / "redis").start()
    repos_dir = tmp / "repos"
    _git_checkout(repos_dir / "web")
    gemini = FakeGeminiAPI().start()
    slack = FakeSlack().start()
    gateway = GatewayProcess(gateway_env(gemini.base_url, ["doctor-key"], redis.url)).start()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    state = {
        k: v
        for k, v in worker_env(redis, repos_dir / "web", egress_root).items()
        if k in ("ASKBOX_REPO_MIRRORS", "ASKBOX_REPO_SNAPSHOTS", "PYTHONUNBUFFERED")
    }
    env = {
        **clean,
        **state,
        "ASKBOX_REDIS_URL": redis.url,
        "ASKBOX_EGRESS_SOCKET_DIR": str(egress_root),
        "ASKBOX_REPOS": json.dumps({"web": str(repos_dir / "web")}),
        "ASKBOX_REPOS_DIR": str(repos_dir),
        "ASKBOX_AGENT": "gemini",
        "ASKBOX_GATEWAY_SOCKET_DIR": str(gateway.socket_dir),
        "SLACK_BOT_TOKEN": slack.bot_token,
        "ASKBOX_SLACK_API_URL": slack.api_url,
    }
    workers = Workers(env)
    workers.start(1, log_dir=tmp)
    try:
        wait_for(lambda: Worker.count(connection=redis_client(redis)), 120, "the worker to register")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{workers.tail()}") from None
    try:
        yield Deployment(env, repos_dir, workers, gateway, slack)
    finally:
        workers.stop()
        gateway.stop()
        slack.close()
        gemini.stop()
        redis.stop()


def redis_client(server: RedisServer):  # type: ignore[no-untyped-def]
    from redis import Redis

    return Redis.from_url(server.url)


def failures(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("FAIL")]


def test_a_healthy_deployment_passes(deployment: Deployment) -> None:
    code, lines, stderr = deployment.doctor()
    assert code == 0 and failures(lines) == [], "\n".join(lines) + stderr
    text = "\n".join(lines)
    for expected in (
        "ok    Docker",
        "ok    images: sandbox, egress-proxy, agent-gemini built",
        "ok    Redis at",
        "ok    1 worker(s) registered",
        "ok    gateway: ready, keys for gemini",
        "ok    agent gemini: the gateway has a key for gemini",
        "ok    repository web:",
        "ok    Slack: Fake Workspace as askbox, scopes complete",
    ):
        assert expected in text, text
    assert "askbox: doctor: no problems" in stderr


@pytest.mark.parametrize(
    ("broken", "changes", "says", "fix"),
    [
        ("Docker unreachable", {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, "Docker", "start the Docker daemon"),
        (
            "an agent image missing",
            {"ASKBOX_GEMINI_IMAGE": "askbox/agent-gemini:0.0.0-never-built"},
            "images missing: agent-gemini (askbox/agent-gemini:0.0.0-never-built)",
            "askbox images build --missing",
        ),
        (
            "Redis unreachable",
            {"ASKBOX_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
            "Redis at 127.0.0.1",
            "docker compose up -d redis",
        ),
        (
            "the gateway not running",
            {"ASKBOX_GATEWAY_SOCKET_DIR": "/nonexistent/gateway"},
            "gateway: not answering on /nonexistent/gateway/control.sock",
            "docker compose logs gateway",
        ),
        (
            "a repository outside ASKBOX_REPOS_DIR",
            {"ASKBOX_REPOS_DIR": "/srv/elsewhere"},
            "outside ASKBOX_REPOS_DIR (/srv/elsewhere)",
            "set ASKBOX_REPOS_DIR to the folder that holds it",
        ),
        (
            "a repository that does not exist",
            {"ASKBOX_REPOS": json.dumps({"web": "/nonexistent/web"}), "ASKBOX_REPOS_DIR": None},
            "/nonexistent/web, which does not exist",
            "check ASKBOX_REPOS",
        ),
        (
            "a Slack token Slack refuses",
            {"SLACK_BOT_TOKEN": "xoxb-not-the-installed-one"},
            "Slack: auth.test answered invalid_auth",
            "check SLACK_BOT_TOKEN",
        ),
        (
            "not a bot token",
            {"SLACK_BOT_TOKEN": "xoxp-a-user-token"},
            "SLACK_BOT_TOKEN is not a bot token",
            "Bot User OAuth Token",
        ),
    ],
)
def test_each_broken_set_up_is_one_line_naming_its_fix(
    deployment: Deployment, broken: str, changes: dict[str, str | None], says: str, fix: str
) -> None:
    code, lines, stderr = deployment.doctor(**changes)
    failed = failures(lines)
    assert code == 1, (broken, lines, stderr)
    assert len(failed) == 1 and says in failed[0] and fix in failed[0], (broken, "\n".join(lines))
    assert "askbox: doctor: " in stderr and "problem(s)" in stderr


def test_no_worker_running(deployment: Deployment) -> None:
    """Another db of the same Redis: nothing registered there."""
    url = deployment.env["ASKBOX_REDIS_URL"].rsplit("/", 1)[0] + "/3"
    code, lines, _ = deployment.doctor(ASKBOX_REDIS_URL=url)
    [failed] = failures(lines)
    assert code == 1 and "no worker is running" in failed and "docker compose logs worker" in failed


def test_the_gateway_without_the_agents_key(deployment: Deployment) -> None:
    """A gateway serving only Anthropic: the Gemini agent cannot answer, and GEMINI_API_KEY is the fix."""
    with GatewayProcess(
        provider_env("anthropic", "http://127.0.0.1:9", ["k"], deployment.env["ASKBOX_REDIS_URL"])
    ).start() as other:
        code, lines, _ = deployment.doctor(ASKBOX_GATEWAY_SOCKET_DIR=str(other.socket_dir))
    [failed] = failures(lines)
    assert code == 1 and "no model can answer" in failed and "set GEMINI_API_KEY" in failed


def test_a_repository_the_sandbox_user_cannot_read(deployment: Deployment) -> None:
    private = deployment.repos_dir / "private"
    private.mkdir(mode=0o700)
    (private / "notes.txt").write_text("not a checkout\n")
    os.chmod(private, 0o700)
    repos = json.dumps({"web": str(deployment.repos_dir / "web"), "private": str(private)})
    code, lines, _ = deployment.doctor(ASKBOX_REPOS=repos)
    [failed] = failures(lines)
    assert code == 1 and "cannot read the repository directory" in failed and f"chmod o+rx {private}" in failed


def test_slack_scopes_missing(deployment: Deployment) -> None:
    with FakeSlack(scopes=[s for s in BOT_SCOPES if s != "files:write"]) as narrow:
        code, lines, _ = deployment.doctor(SLACK_BOT_TOKEN=narrow.bot_token, ASKBOX_SLACK_API_URL=narrow.api_url)
    [failed] = failures(lines)
    assert code == 1 and "lacks files:write" in failed and "reinstall the app" in failed


@pytest.mark.parametrize(
    ("broken", "changes", "says"),
    [
        # The first run's: a Redis password with a character a URL cannot carry (compose puts it
        # into ASKBOX_REDIS_URL), no key for the agent that would answer, the dashboard unset,
        # a repository outside the one folder compose mounts.
        (
            "a Redis password a URL cannot carry",
            {"ASKBOX_REDIS_URL": "redis://:pa#ss@redis:6379/0"},
            "ASKBOX_REDIS_PASSWORD to such a value, e.g. `openssl rand -hex 32`",
        ),
        ("no model key", {"GEMINI_API_KEY": None}, "set GEMINI_API_KEY"),
        ("the dashboard's password unset", {"ASKBOX_DASHBOARD_PASSWORD": None}, "set ASKBOX_DASHBOARD_PASSWORD"),
        (
            "a repository outside ASKBOX_REPOS_DIR",
            {"ASKBOX_REPOS": json.dumps({"web": "/home/me/web"})},
            "/home/me/web is outside ASKBOX_REPOS_DIR",
        ),
    ],
)
def test_config_only_as_the_compose_preflight_runs_it(
    deployment: Deployment, broken: str, changes: dict[str, str | None], says: str
) -> None:
    """No service is needed: Redis, Docker and the gateway are pointed nowhere."""
    healthy = {
        "ASKBOX_REDIS_URL": "redis://:0123abcd@redis:6379/0",
        "GEMINI_API_KEY": "a-key",
        "ASKBOX_DASHBOARD_USER": "admin",
        "ASKBOX_DASHBOARD_PASSWORD": "pw",
        "DOCKER_HOST": "unix:///nonexistent",
        "ASKBOX_GATEWAY_SOCKET_DIR": "/nonexistent",
    }
    code, lines, stderr = deployment.doctor("--config", **healthy)
    assert code == 0 and failures(lines) == [], lines
    code, lines, stderr = deployment.doctor("--config", **{**healthy, **changes})
    [failed] = failures(lines)
    assert code == 1 and says in failed, (broken, lines, stderr)
