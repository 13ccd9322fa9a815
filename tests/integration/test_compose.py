"""compose.yaml with the real docker-compose: it validates, and `up` brings up a service
that answers.

The end-to-end test builds the app and redis images from the offline base (no registry),
runs `docker-compose up` (every default service: redis, worker, dashboard; the Slack bot
is in a profile) under a project name of its own, enqueues a question from here into the
containerized Redis, and waits for the worker IN ITS CONTAINER to answer it by running the
cursor-agent stand-in in a sandbox on the host, through the host's Docker daemon. That
proves the same-path mounts: the host daemon found the repository and the egress socket
directory at the paths the worker named, and the worker read the repository's commit.

The project is a copy of the checkout (what the image needs, plus tests/ and a canary .env
that .dockerignore must keep out) with the host's extra CA certificates in
images/app/extra-ca/, the way compose.yaml tells users behind a TLS-inspecting proxy.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from redis import Redis, RedisError
from rq import Worker

from jobs import queue as jobs_queue
from jobs.question import Origin, Question
from jobs.settings import JobSettings
from sandbox import images, labels
from sandbox.egress import EgressProxies
from tests.conftest import unavailable
from tests.integration.pipeline_helpers import free_port, wait_final, wait_for

ROOT = Path(__file__).resolve().parents[2]
QUICK = "[transcript:subagent-sleep-v2]"  # about 1.6 s of recorded cursor-agent output
DASHBOARD_USER, DASHBOARD_PASSWORD = "ops", "compose-test-pw"
REDIS_PASSWORD = "compose-test-redis-pw"
# Never copied into the test project: big, private, or built from it.
NOT_COPIED = (".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", ".mypy_cache",
              ".ruff_cache", ".env", "repos", "build", "dist")


@pytest.fixture(scope="module")
def compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        unavailable("docker-compose", "not installed (apt-get install -y docker-compose)")
    return path


def _clean_env() -> dict[str, str]:
    """This process's environment without any askbox, agent or Slack setting."""
    prefixes = ("ASKBOX_", "CURSOR_", "GEMINI_", "SLACK_", "COMPOSE_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def _env() -> dict[str, str]:
    """A clean environment with the one setting compose requires."""
    return {**_clean_env(), "ASKBOX_REDIS_PASSWORD": REDIS_PASSWORD}


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def test_config_is_valid(compose: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"  # and not a developer's .env
    empty.write_text("")
    base = [compose, "--env-file", str(empty), "-f", str(ROOT / "compose.yaml")]

    # Redis requires a password: without one compose stops at once, saying which variable.
    for missing in (_clean_env(), {**_clean_env(), "ASKBOX_REDIS_PASSWORD": ""}):
        refused = _run([*base, "config"], missing, ROOT)
        assert refused.returncode != 0 and "set ASKBOX_REDIS_PASSWORD" in refused.stderr, refused.stderr

    result = _run([*base, "config"], _env(), ROOT)
    assert result.returncode == 0, result.stderr
    config = result.stdout
    # Every askbox service reaches Redis with the password; Redis is on the internal network
    # alone, the others on it and on the default network (upstream calls, published port).
    assert "networks:\n  redis:\n    internal: true\n" in config
    redis_service = _service(config, "redis")
    assert "    networks:\n      redis: null\n" in redis_service and "ports:" not in redis_service
    assert f"REDIS_PASSWORD: {REDIS_PASSWORD}\n" in redis_service
    for name in ("gateway", "worker", "dashboard", "bot"):
        service = _service(config, name)
        assert f"ASKBOX_REDIS_URL: redis://:{REDIS_PASSWORD}@redis:6379/0\n" in service, name
        assert "    networks:\n      default: null\n      redis: null\n" in service, name
    # Defaults: the repositories and egress sockets at the same path inside and outside.
    assert "- /srv/repos:/srv/repos:ro" in config
    assert "- /run/askbox/egress:/run/askbox/egress" in config
    assert "ASKBOX_EGRESS_SOCKET_DIR: /run/askbox/egress" in config
    assert "- /var/lib/askbox/snapshots:/var/lib/askbox/snapshots" in config  # what sandboxes mount
    assert "- /var/run/docker.sock:/var/run/docker.sock" in config
    assert "- 127.0.0.1:9181:9181/tcp" in config  # the dashboard on the host's loopback only
    assert "BASE: debian:trixie-slim" in config

    services = _run([*base, "config", "--services"], _env(), ROOT).stdout.split()
    assert sorted(services) == ["bot", "dashboard", "gateway", "redis", "worker"]
    profiles = _run([*base, "config", "--profiles"], _env(), ROOT).stdout.split()
    assert profiles == ["slack"]  # the bot's: `up` without it starts no bot (see below)

    slack = _run([*base, "--profile", "slack", "config"], _env(), ROOT)
    assert slack.returncode == 0, slack.stderr
    assert "askbox\n    - bot" in slack.stdout  # command: [askbox, bot]

    # What a user sets is used on both sides of each same-path mount.
    env = {**_env(), "ASKBOX_REPOS_DIR": "/data/checkouts", "ASKBOX_EGRESS_SOCKET_DIR": "/run/other/egress",
           "ASKBOX_BASE_IMAGE": images.OFFLINE_BASE, "ASKBOX_DASHBOARD_HOST_PORT": "19999"}
    custom = _run([*base, "config"], env, ROOT)
    assert custom.returncode == 0, custom.stderr
    assert "- /data/checkouts:/data/checkouts:ro" in custom.stdout
    assert "- /run/other/egress:/run/other/egress" in custom.stdout
    assert "ASKBOX_EGRESS_SOCKET_DIR: /run/other/egress" in custom.stdout
    assert "- 127.0.0.1:19999:9181/tcp" in custom.stdout
    assert f"BASE: {images.OFFLINE_BASE}" in custom.stdout


def _service(config: str, name: str) -> str:
    """One service's block of `docker-compose config` output (pyyaml is not a dependency)."""
    services = config[config.index("\nservices:\n"):]
    start = services.index(f"\n  {name}:\n")
    end = re.search(r"\n  \S|\n\S", services[start + 1:])
    return services[start: start + 1 + end.start()] if end else services[start:]


def _copy_project(into: Path) -> Path:
    project = into / "askbox"
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(*NOT_COPIED), symlinks=True)
    # A canary: .dockerignore must keep a user's .env (their keys) out of the image.
    (project / ".env").write_text("CANARY=do-not-bake-me\n")
    ca = project / "images" / "app" / "extra-ca"
    ca.mkdir(exist_ok=True)
    if images.DEFAULT_EXTRA_CA_DIR.is_dir():
        for cert in images.DEFAULT_EXTRA_CA_DIR.rglob("*.crt"):
            shutil.copy(cert, ca / cert.name)
    return project


def _git_repo(path: Path) -> str:
    (path / "src").mkdir(parents=True)
    (path / "README.md").write_text("# demo repo\n")
    (path / "src" / "app.py").write_text("def answer():\n    return 42\n")
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for argv in (["init", "-q"], ["add", "."], ["commit", "-qm", "demo"]):
        subprocess.run([*git, *argv], check=True, capture_output=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def _base_image(client: docker.DockerClient) -> str:
    try:
        client.images.get(images.OFFLINE_BASE)
        return images.OFFLINE_BASE
    except docker.errors.ImageNotFound:
        return "debian:trixie-slim"


class Stack:
    def __init__(self, compose: str, project: Path, name: str, env: dict[str, str]) -> None:
        self.project, self.name, self.env = project, name, env
        override = project.parent / "test-override.yaml"
        # Test only: Redis published on a random port of the host's loopback, to enqueue from
        # here (and to knock without the password). Docker publishes no port of a container
        # on internal networks only, so for the test it also joins the default network.
        override.write_text('services:\n  redis:\n    ports: ["127.0.0.1::6379"]\n'
                            '    networks: [redis, default]\n')
        env_file = project.parent / "test.env"  # not the project's .env (the canary)
        env_file.write_text("")
        self.base = [compose, "-p", name, "--env-file", str(env_file),
                     "-f", str(project / "compose.yaml"), "-f", str(override)]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return _run([*self.base, *args], self.env, self.project, timeout)

    def logs(self) -> str:
        result = self.run("logs", "--no-color", "--tail=60", timeout=60)
        return result.stdout[-12000:] + result.stderr[-2000:]


@pytest.fixture()
def stack(compose: str, docker_client: docker.DockerClient, cursor_standin_image: str,
          tmp_path: Path) -> Iterator[tuple[Stack, dict[str, object]]]:
    repos_dir = tmp_path / "repos"
    commit = _git_repo(repos_dir / "demo")
    egress_dir = tmp_path / "egress"
    egress_dir.mkdir()
    os.chmod(egress_dir, 0o755)
    project = _copy_project(tmp_path)
    dashboard_port = free_port()
    env = {
        **_env(),
        "ASKBOX_BASE_IMAGE": _base_image(docker_client),
        "ASKBOX_IMAGE_TAG": "test",  # kept between runs, as the test images are: the build cache stays warm
        "ASKBOX_DEPLOYMENT": os.environ["ASKBOX_DEPLOYMENT"],  # this session's: no_leftovers sees its sandboxes
        "ASKBOX_REPOS_DIR": str(repos_dir),
        "ASKBOX_REPOS": json.dumps({"demo": str(repos_dir / "demo")}),
        "ASKBOX_REPO_SNAPSHOTS": str(tmp_path / "snapshots"),  # the worker snapshots the checkout's commit
        "ASKBOX_EGRESS_SOCKET_DIR": str(egress_dir),
        "ASKBOX_AGENT": "cursor",
        "ASKBOX_CURSOR_IMAGE": cursor_standin_image,
        "CURSOR_API_KEY": "key-for-the-standin",
        "GEMINI_API_KEY": "gateway-key-unused-here",  # the gateway service starts only with a key
        "ASKBOX_GATEWAY_SOCKET_DIR": tempfile.mkdtemp(prefix="askbox-gw-", dir="/tmp"),  # AF_UNIX paths are short
        "ASKBOX_DASHBOARD_USER": DASHBOARD_USER,
        "ASKBOX_DASHBOARD_PASSWORD": DASHBOARD_PASSWORD,
        "ASKBOX_DASHBOARD_HOST_PORT": str(dashboard_port),
    }
    stack = Stack(compose, project, f"askbox-test-{uuid.uuid4().hex[:8]}", env)
    try:
        yield stack, {"commit": commit, "egress_dir": egress_dir, "dashboard_port": dashboard_port}
    finally:
        down = stack.run("down", "-v", "--remove-orphans", timeout=180)
        # The worker started an egress proxy for this socket directory through the host's daemon.
        EgressProxies(images.tag("egress-proxy"), egress_dir).stop_all(docker_client)
        assert down.returncode == 0, down.stderr
        left = docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project={stack.name}"})
        assert left == [], f"compose containers left: {[c.name for c in left]}"


def _get(port: int, path: str, auth: bool = True) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        token = base64.b64encode(f"{DASHBOARD_USER}:{DASHBOARD_PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.docker
@pytest.mark.usefixtures("no_leftovers")
def test_compose_up_answers_a_question(stack, docker_client: docker.DockerClient) -> None:
    stack, facts = stack
    started = time.monotonic()
    up = stack.run("up", "-d", "--build", timeout=900)
    built = time.monotonic() - started
    assert up.returncode == 0, f"{up.stderr[-6000:]}\n{stack.logs()}"

    # `docker compose up` without a profile: redis, gateway, worker, dashboard, and no bot.
    running = {c.labels["com.docker.compose.service"]
               for c in docker_client.containers.list(filters={"label": f"com.docker.compose.project={stack.name}"})}
    assert running == {"redis", "gateway", "worker", "dashboard"}, stack.logs()

    port = stack.run("port", "redis", "6379").stdout.strip().rsplit(":", 1)[-1]
    # A client without the password is refused, by the composed Redis itself; so is a wrong one.
    assert _knock(int(port), b"PING") == b"-NOAUTH Authentication required.\r\n"
    assert _knock(int(port), b"AUTH wrong-password").startswith(b"-WRONGPASS")
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    redis = Redis.from_url(url, socket_connect_timeout=2)
    try:
        wait_for(lambda: _workers(redis), 60, "the worker to register in Redis")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None
    ready = time.monotonic() - started

    # .dockerignore kept the user's .env and the tests out of the image; images/ is in it.
    check = stack.run("exec", "-T", "worker", "sh", "-c",
                      "test ! -e /opt/askbox/src/.env && test ! -e /opt/askbox/src/tests "
                      "&& test -f /opt/askbox/src/images/sandbox/Dockerfile")
    assert check.returncode == 0, check.stdout + check.stderr

    asked = time.monotonic()
    question = Question(origin=Origin(kind="terminal", user="alice"), text=f"{QUICK} where is answer()?", repo="demo")
    job_id = jobs_queue.enqueue(redis, question, JobSettings()).job.id
    try:
        final = wait_final(redis, job_id, 120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None
    answered = time.monotonic() - asked
    assert final["kind"] == "answer", f"{final}\n{stack.logs()}"
    assert final["repo"] == "demo" and final["agent"] == "cursor"
    # Read by the worker in its container at the host's path: the same-path mount works.
    assert final["commit"] == facts["commit"]
    # The sandbox's egress proxy runs on the host, started by the worker through the host's daemon.
    # (The worker's egress self-test has a proxy of its own: the cursor allowlist's is the one.)
    proxies = [c for c in docker_client.containers.list(filters={"label": f"{labels.EGRESS_ROOT}={facts['egress_dir']}"})
               if "cursor.sh" in c.labels.get("askbox.egress.allow", "")]
    assert len(proxies) == 1
    # Its socket directory is where the worker named it, on the host: runs got sockets in it.
    sources = [Path(m["Source"]) for m in proxies[0].attrs["Mounts"]]
    assert any(s.parent == facts["egress_dir"] and (s / "runs").is_dir() for s in sources), sources

    # The dashboard: on the host's loopback, behind basic auth, reading the same Redis.
    dashboard = facts["dashboard_port"]
    wait_for(lambda: _dashboard_answers(dashboard), 30, "the dashboard to answer")
    assert _get(dashboard, "/", auth=False)[0] == 401
    status, body = _get(dashboard, "/0/data/workers.json")
    assert status == 200 and len(json.loads(body)["workers"]) == 1, body[:500]
    status, body = _get(dashboard, f"/0/data/job/{job_id}.json")
    assert status == 200 and json.loads(body)["status"] == "finished", body[:500]
    print(f"compose: up (build included) {built:.1f} s, worker registered after {ready:.1f} s, "
          f"question answered in {answered:.1f} s")


def _knock(port: int, command: bytes) -> bytes:
    """One inline command on a bare connection, as any client that can reach the port would."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(command + b"\r\n")
        return conn.recv(200)


def _workers(redis: Redis) -> int:
    try:
        return Worker.count(connection=redis)
    except RedisError:
        return 0


def _dashboard_answers(port: int) -> bool:
    try:
        return _get(port, "/")[0] == 200
    except OSError:
        return False
