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
import shlex
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

from jobs import keys
from jobs import queue as jobs_queue
from sandbox import images, labels
from tests.conftest import unavailable
from tests.fakes.gemini_api import FakeGeminiAPI, Text
from tests.fakes.slack import FakeSlack
from tests.integration.conftest import ASKER, CHANNEL
from tests.integration.pipeline_helpers import TcpRelay, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
QUICK = "[transcript:subagent-sleep-v2]"  # about 1.6 s of recorded cursor-agent output
DASHBOARD_USER, DASHBOARD_PASSWORD = "ops", "compose-test-pw"
REDIS_PASSWORD = "compose-test-redis-pw"
# Never copied into the test project: big, private, or built from it.
NOT_COPIED = (".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".env")
# At the top only, as .dockerignore reads them: jobs/repos/ is code and must be copied.
NOT_COPIED_AT_TOP = ("repos", "build", "dist")


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
    assert "- egress-locks:/run/askbox/egress.locks:rw" in _service(config, "worker")  # the workers' own, beside it
    assert "- /var/run/docker.sock:/var/run/docker.sock" in config
    assert "- 127.0.0.1:9181:9181/tcp" in config  # the dashboard on the host's loopback only
    assert "BASE: debian:trixie-slim" in config

    services = _run([*base, "config", "--services"], _env(), ROOT).stdout.split()
    assert sorted(services) == ["bot", "dashboard", "gateway", "images", "preflight", "redis", "worker"]
    # Issue 21: the settings are checked before anything starts; Redis (and so every
    # service) and the image builds wait for that check to pass.
    preflight = _service(config, "preflight")
    assert "- doctor\n    - --config" in preflight and "network_mode: none" in preflight, preflight
    for name in ("redis", "images"):
        assert "preflight:\n        condition: service_completed_successfully" in _service(config, name), name
    # The images service builds the sandbox images on the host's daemon; the worker waits
    # for it to finish successfully (docker-compose 1.29 accepts the condition).
    images_service = _service(config, "images")
    assert "- /var/run/docker.sock:/var/run/docker.sock" in images_service and "network_mode: none" in images_service
    assert "- build\n    - --missing" in images_service and 'restart: "no"' in images_service
    assert "images:\n        condition: service_completed_successfully" in _service(config, "worker")
    for name in ("gateway", "worker", "dashboard", "bot"):  # a failed start check does not loop
        assert "restart: on-failure:3" in _service(config, name), name
    assert "ASKBOX_DASHBOARD_URL: http://127.0.0.1:9181/" in _service(config, "dashboard")
    profiles = _run([*base, "config", "--profiles"], _env(), ROOT).stdout.split()
    assert profiles == ["slack"]  # the bot's: `up` without it starts no bot (see below)

    slack = _run([*base, "--profile", "slack", "config"], _env(), ROOT)
    assert slack.returncode == 0, slack.stderr
    assert "askbox\n    - bot" in slack.stdout  # command: [askbox, bot]

    # What a user sets is used on both sides of each same-path mount.
    env = {
        **_env(),
        "ASKBOX_REPOS_DIR": "/data/checkouts",
        "ASKBOX_EGRESS_SOCKET_DIR": "/run/other/egress",
        "ASKBOX_BASE_IMAGE": images.OFFLINE_BASE,
        "ASKBOX_DASHBOARD_HOST_PORT": "19999",
    }
    custom = _run([*base, "config"], env, ROOT)
    assert custom.returncode == 0, custom.stderr
    assert "- /data/checkouts:/data/checkouts:ro" in custom.stdout
    assert "- /run/other/egress:/run/other/egress" in custom.stdout
    assert "- egress-locks:/run/other/egress.locks" in custom.stdout
    assert "ASKBOX_EGRESS_SOCKET_DIR: /run/other/egress" in custom.stdout
    assert "- 127.0.0.1:19999:9181/tcp" in custom.stdout
    assert "ASKBOX_DASHBOARD_URL: http://127.0.0.1:19999/" in custom.stdout  # what it logs for users
    assert f"BASE: {images.OFFLINE_BASE}" in custom.stdout


@pytest.fixture(params=["docker-compose 1.29", "compose v2"])
def compose_cli(request: pytest.FixtureRequest, compose: str) -> list[str]:
    """`up` is run with both: Debian 12's docker-compose and current Docker's `docker compose`."""
    return [compose] if request.param == "docker-compose 1.29" else _compose_v2()


def _compose_v2() -> list[str]:
    """Compose v2, the `docker compose` CLI plugin (.ci/run installs Debian trixie's)."""
    argv = [shutil.which("docker") or "docker", "compose"]
    try:
        found = subprocess.run([*argv, "version"], capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as exc:
        unavailable("Compose v2 (docker compose)", exc)
    if found.returncode != 0 or not re.search(r"version v?[2-9]\.", found.stdout):
        unavailable("Compose v2 (docker compose)", (found.stdout + found.stderr).strip() or "not a v2 plugin")
    return argv


def test_config_is_valid_for_compose_v2(tmp_path: Path) -> None:
    """What users of current Docker run: `docker compose` reads compose.yaml and the
    docker-filter override with the meaning the v1 test above checks."""
    compose = _compose_v2()
    empty = tmp_path / "empty.env"
    empty.write_text("")
    base = [*compose, "--env-file", str(empty), "-f", str(ROOT / "compose.yaml")]
    refused = _run([*base, "config"], _clean_env(), ROOT)
    assert refused.returncode != 0 and "set ASKBOX_REDIS_PASSWORD" in refused.stderr, refused.stderr

    result = _run([*base, "--profile", "slack", "config", "--format", "json"], _env(), ROOT)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    services = config["services"]
    assert sorted(services) == ["bot", "dashboard", "gateway", "images", "preflight", "redis", "worker"]
    assert services["preflight"]["command"] == ["askbox", "doctor", "--config"]
    assert services["redis"]["depends_on"]["preflight"]["condition"] == "service_completed_successfully"
    assert config["networks"]["redis"].get("internal") is True
    assert list(services["redis"]["networks"]) == ["redis"] and "ports" not in services["redis"]
    for name in ("gateway", "worker", "dashboard", "bot"):
        service = services[name]
        assert service["restart"] == "on-failure:3", name
        assert sorted(service["networks"]) == ["default", "redis"], name
        assert service["environment"]["ASKBOX_REDIS_URL"] == f"redis://:{REDIS_PASSWORD}@redis:6379/0", name
    assert services["bot"]["command"] == ["askbox", "bot"] and services["bot"]["profiles"] == ["slack"]
    worker = services["worker"]
    assert worker["depends_on"]["images"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    mounts = {(m["source"], m["target"], m.get("read_only", False)) for m in worker["volumes"]}
    assert {
        ("/var/run/docker.sock", "/var/run/docker.sock", False),
        ("/srv/repos", "/srv/repos", True),
        ("/run/askbox/egress", "/run/askbox/egress", False),
        ("/var/lib/askbox/snapshots", "/var/lib/askbox/snapshots", False),
    } <= mounts
    images_service = services["images"]
    assert images_service["network_mode"] == "none" and images_service["restart"] == "no"
    command = images_service["command"]
    assert command[command.index("build") :][:2] == ["build", "--missing"], command
    [port] = services["dashboard"]["ports"]
    assert (port["host_ip"], port["target"], str(port["published"])) == ("127.0.0.1", 9181, "9181")

    filtered = _run(
        [*base, "-f", str(ROOT / "compose.docker-filter.yaml"), "config", "--format", "json"],
        {**_env(), "ASKBOX_REPOS_DIR": "/data/checkouts"},
        ROOT,
    )
    assert filtered.returncode == 0, filtered.stderr
    services = json.loads(filtered.stdout)["services"]
    worker_mounts = {(m["source"], m["target"]) for m in services["worker"]["volumes"]}
    assert ("/var/run/docker.sock", "/var/run/docker.sock") not in worker_mounts  # the real socket is gone
    assert ("/dev/null", "/var/run/docker.sock") in worker_mounts
    assert services["worker"]["environment"]["DOCKER_HOST"] == "unix:///run/askbox-docker/docker.sock"
    assert services["worker"]["depends_on"]["docker-filter"]["condition"] == "service_healthy"
    assert services["docker-filter"]["network_mode"] == "none"
    # Issue 17: nothing a container binds is the worker's to write, but the snapshots'
    # staging area; the filter writes the sealed snapshots and the egress sockets.
    worker_mounts = {(m["source"], m["target"], m.get("read_only", False)) for m in services["worker"]["volumes"]}
    writable = {(source, target) for source, target, read_only in worker_mounts if not read_only}
    assert writable == {
        ("/var/lib/askbox/snapshots/staging", "/var/lib/askbox/snapshots/staging"),
        ("egress-locks", "/run/askbox/egress.locks"),
        ("repo-mirrors", "/var/lib/askbox/mirrors"),
    }
    assert {
        ("/var/lib/askbox/snapshots", "/var/lib/askbox/snapshots", True),
        ("/run/askbox/egress", "/run/askbox/egress", True),
        ("/run/askbox/gateway", "/run/askbox/gateway", True),
    } <= worker_mounts
    docker_filter = services["docker-filter"]
    filter_mounts = {(m["source"], m["target"], m.get("read_only", False)) for m in docker_filter["volumes"]}
    assert {
        ("/var/lib/askbox/snapshots", "/var/lib/askbox/snapshots", False),
        ("/run/askbox/egress", "/run/askbox/egress", False),
        ("/run/askbox/gateway", "/run/askbox/gateway", True),
        ("/data/checkouts", "/data/checkouts", True),
    } <= filter_mounts
    assert sorted(docker_filter["cap_add"]) == ["CHOWN", "DAC_OVERRIDE"] and docker_filter["cap_drop"] == ["ALL"]


def _service(config: str, name: str) -> str:
    """One service's block of `docker-compose config` output (pyyaml is not a dependency)."""
    services = config[config.index("\nservices:\n") :]
    start = services.index(f"\n  {name}:\n")
    end = re.search(r"\n  \S|\n\S", services[start + 1 :])
    return services[start : start + 1 + end.start()] if end else services[start:]


def readme_block(heading: str, containing: str) -> str:
    """The first ```sh block under ``heading`` of README.md that holds ``containing``: the
    commands as the README prints them, so the README cannot drift from what works."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(f"\n{heading}\n") :]
    for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL):
        if containing in block:
            return block
    raise AssertionError(f"README.md has no sh block with {containing!r} under {heading!r}")


def _copy_project(into: Path) -> Path:
    project = into / "askbox"
    anywhere = shutil.ignore_patterns(*NOT_COPIED)

    def ignore(directory: str, names: list[str]) -> set[str]:
        top = {n for n in names if n in NOT_COPIED_AT_TOP} if Path(directory) == ROOT else set()
        return set(anywhere(directory, names)) | top

    shutil.copytree(ROOT, project, ignore=ignore, symlinks=True)
    # A canary: .dockerignore must keep a user's .env (their keys) out of the image.
    (project / ".env").write_text("CANARY=do-not-bake-me\n")
    # Images of this copy's own: their tags (digests of images/) exist nowhere yet, so the
    # images service must build them, as on a fresh host (Docker's layer cache makes that
    # quick: a comment changes no instruction).
    for name in ("sandbox", "egress-proxy"):
        with (project / "images" / name / "Dockerfile").open("a") as dockerfile:
            dockerfile.write(f"# compose test {uuid.uuid4().hex}\n")
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


OVERRIDE = """\
services:
  # Test only: Redis published on a random port of the host's loopback, to enqueue from
  # here (and to knock without the password). Docker publishes no port of a container on
  # internal networks only, so for the test it also joins the default network.
  redis:
    build: {{network: host}}
    ports: ["127.0.0.1::6379"]
    networks: [redis, default]
  # The bot in Slack's HTTP mode, its port on the host's loopback (where the fake posts).
  bot:
    build: {{network: host}}
    command: ["askbox", "bot", "--http", "--port", "3000"]
    ports: ["127.0.0.1::3000"]
    extra_hosts: ["fakes.askbox-test:{gateway}"]
  worker:
    build: {{network: host}}
    extra_hosts: ["fakes.askbox-test:{gateway}"]
  gateway:
    build: {{network: host}}
    extra_hosts: ["fakes.askbox-test:{gateway}"]
  # Builds on the host's network: they then need no default bridge (docker0), which a
  # shared test machine may lack; the image is the same.
  images:
    build: {{network: host}}
  dashboard:
    build: {{network: host}}
{extra}# The default network on a subnet of the test's choosing: its gateway is an address of
# this host, where the test relays the fakes (which listen on loopback only).
networks:
  default:
    ipam:
      config: [{{subnet: "{subnet}"}}]
"""


FILTER_OVERRIDE = """\
  docker-filter:
    build: {network: host}
"""


class Stack:
    def __init__(
        self,
        compose: list[str],
        project: Path,
        name: str,
        env: dict[str, str],
        subnet: str,
        docker_filter: bool = False,
    ) -> None:
        self.project, self.name, self.env = project, name, env
        self.gateway = subnet.rsplit(".", 1)[0] + ".1"
        override = project.parent / "test-override.yaml"
        override.write_text(
            OVERRIDE.format(gateway=self.gateway, subnet=subnet, extra=FILTER_OVERRIDE if docker_filter else "")
        )
        env_file = project.parent / "test.env"  # not the project's .env (the canary)
        env_file.write_text("")
        files = ["compose.yaml", *(["compose.docker-filter.yaml"] if docker_filter else [])]
        self.base = [
            *compose,
            "-p",
            name,
            "--env-file",
            str(env_file),
            *(arg for f in files for arg in ("-f", str(project / f))),
            "-f",
            str(override),
            "--profile",
            "slack",
        ]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return _run([*self.base, *args], self.env, self.project, timeout)

    def shell(self, script: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """``script`` (a README code block, as printed) in bash in the project, where
        `docker compose` and `docker-compose` are this stack's compose (its project name,
        the test's override) reading the project's own .env, as a user's would."""
        compose = " ".join(
            shlex.quote(arg) for arg in self.base if arg != "--env-file" and not arg.endswith("test.env")
        )
        prelude = (
            f'docker() {{ if [ "$1" = compose ]; then shift; {compose} "$@"; else command docker "$@"; fi; }}\n'
            f'docker-compose() {{ {compose} "$@"; }}\n'
        )
        return _run(["bash", "-euo", "pipefail", "-c", prelude + script], self.env, self.project, timeout)

    def logs(self, *services: str) -> str:
        result = self.run("logs", "--no-color", "--tail=60", *services, timeout=60)
        return result.stdout[-12000:] + result.stderr[-2000:]

    def port(self, service: str, port: int) -> int:
        return int(self.run("port", service, str(port)).stdout.strip().rsplit(":", 1)[-1])


SIGNING_SECRET = "compose-test-signing-secret"


@pytest.fixture()
def stack(
    compose_cli: list[str], docker_client: docker.DockerClient, cursor_standin_image: str, tmp_path: Path
) -> Iterator[tuple[Stack, dict[str, object]]]:
    yield from _stack(compose_cli, docker_client, cursor_standin_image, tmp_path)


@pytest.fixture()
def filter_stack(
    docker_client: docker.DockerClient, cursor_standin_image: str, tmp_path: Path
) -> Iterator[tuple[Stack, dict[str, object]]]:
    """The same stack with compose.docker-filter.yaml (compose v2: the v1 reading of the
    files is checked in test_docker_filter.py)."""
    yield from _stack(_compose_v2(), docker_client, cursor_standin_image, tmp_path, docker_filter=True)


def _stack(
    compose_cli: list[str],
    docker_client: docker.DockerClient,
    cursor_standin_image: str,
    tmp_path: Path,
    docker_filter: bool = False,
) -> Iterator[tuple[Stack, dict[str, object]]]:
    repos_dir = tmp_path / "repos"
    commit = _git_repo(repos_dir / "demo")
    egress_dir = tmp_path / "egress"
    egress_dir.mkdir()
    os.chmod(egress_dir, 0o755)
    project = _copy_project(tmp_path)
    slack = FakeSlack().start()
    slack.add_user(ASKER, name="asker")
    gemini = FakeGeminiAPI().start()
    relay_ports = {"slack": free_port(), "gemini": free_port()}  # on the stack's network gateway, once it exists
    dashboard_port = free_port()
    # The documented way to trust a TLS-inspecting proxy's CA in the app image: as text.
    extra_ca = "\n".join(c.read_text() for c in sorted(images.DEFAULT_EXTRA_CA_DIR.rglob("*.crt")))
    deployment = f"compose-{uuid.uuid4().hex[:8]}"  # this stack's own: `down` must leave none of it
    env = {
        **_env(),
        "ASKBOX_BASE_IMAGE": _base_image(docker_client),
        "ASKBOX_EXTRA_CA": extra_ca,
        # This stack's own tag (another test session on this daemon builds its own tree's
        # code); at teardown it becomes :test, which keeps the build cache warm between runs.
        "ASKBOX_IMAGE_TAG": f"test-{deployment}",
        "ASKBOX_DEPLOYMENT": deployment,
        "ASKBOX_REPOS_DIR": str(repos_dir),
        # "web": the README's quick start asks about it; "demo": the channel's.
        "ASKBOX_REPOS": json.dumps({"demo": str(repos_dir / "demo"), "web": str(repos_dir / "demo")}),
        "ASKBOX_REPO_SNAPSHOTS": str(tmp_path / "snapshots"),  # the worker snapshots the checkout's commit
        "ASKBOX_CHANNEL_REPOS": json.dumps({CHANNEL: "demo"}),
        "ASKBOX_EGRESS_SOCKET_DIR": str(egress_dir),
        "ASKBOX_AGENT": "gemini",
        "ASKBOX_CURSOR_IMAGE": cursor_standin_image,  # agent=cursor questions: the stand-in (never downloaded)
        "CURSOR_API_KEY": "key-for-the-standin",
        "GEMINI_API_KEY": "gateway-key-for-the-fake",
        "ASKBOX_GEMINI_BASE_URL": f"http://fakes.askbox-test:{relay_ports['gemini']}",
        "ASKBOX_GATEWAY_SOCKET_DIR": tempfile.mkdtemp(prefix="askbox-gw-", dir="/tmp"),  # AF_UNIX paths are short
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "ASKBOX_SLACK_API_URL": f"http://fakes.askbox-test:{relay_ports['slack']}/api/",
        "ASKBOX_DASHBOARD_USER": DASHBOARD_USER,
        "ASKBOX_DASHBOARD_PASSWORD": DASHBOARD_PASSWORD,
        "ASKBOX_DASHBOARD_HOST_PORT": str(dashboard_port),
        # A killed worker's question is found quickly (RQ adds 60 s to the heartbeat anyway).
        "ASKBOX_WORKER_TTL": "20",
        "ASKBOX_MAINTENANCE_INTERVAL": "5",
        "ASKBOX_REAPER_INTERVAL": "5",
        "ASKBOX_DOCKER_FILTER_IMAGES": "askbox/,askbox-test/",  # and the cursor-agent stand-in's (the filter's)
    }
    subnet = f"10.213.{uuid.uuid4().int % 250 + 1}.0/24"  # a private range Docker's default pools leave alone
    stack = Stack(compose_cli, project, f"askbox-test-{uuid.uuid4().hex[:8]}", env, subnet, docker_filter)
    built = {name: images.tag(name, project / "images") for name in ("sandbox", "egress-proxy", "agent-gemini")}
    relays: list[TcpRelay] = []
    facts = {
        "commit": commit,
        "egress_dir": egress_dir,
        "snapshots": tmp_path / "snapshots",
        "gateway_dir": Path(env["ASKBOX_GATEWAY_SOCKET_DIR"]),
        "dashboard_port": dashboard_port,
        "slack": slack,
        "gemini": gemini,
        "deployment": deployment,
        "built": built,
        "relays": relays,
        "relay_to": {
            relay_ports["slack"]: slack.base_url.rsplit(":", 1)[1].strip("/"),
            relay_ports["gemini"]: gemini.port,
        },
    }
    try:
        yield stack, facts
    finally:
        try:
            _teardown(stack, docker_client, facts)
        finally:
            for relay in relays:
                relay.close()
            slack.close()
            gemini.stop()
            for repository in ("askbox/app", "askbox/redis"):
                _retag(docker_client, f"{repository}:{env['ASKBOX_IMAGE_TAG']}", f"{repository}:test")
            for image in built.values():  # this copy's tags (their layers are shared with the real ones)
                try:
                    docker_client.images.remove(image)
                except docker.errors.APIError:
                    pass


def _retag(client: docker.DockerClient, image: str, to: str) -> None:
    try:
        client.images.get(image).tag(to)
        client.images.remove(image)
    except docker.errors.ImageNotFound:
        pass  # the stack never got to build it


def _teardown(stack: Stack, client: docker.DockerClient, facts: dict) -> None:
    """`down` alone must leave nothing: no compose container, network or volume, and none of
    what the worker started through the host's daemon (sandboxes, egress proxies)."""
    down = stack.run("down", "-v", "--remove-orphans", timeout=180)
    assert down.returncode == 0, down.stderr
    _assert_nothing_left(stack, client, facts)


def _assert_nothing_left(stack: Stack, client: docker.DockerClient, facts: dict) -> None:
    project = {"label": f"com.docker.compose.project={stack.name}"}
    left = {
        "containers": [c.name for c in client.containers.list(all=True, filters=project)],
        "networks": [n.name for n in client.networks.list(filters=project)],
        "volumes": [v.name for v in client.volumes.list(filters=project)],
        "sandboxes": [
            c.name
            for c in client.containers.list(all=True, filters={"label": f"{labels.SANDBOX}={facts['deployment']}"})
        ],
        "egress proxies": [
            c.name
            for c in client.containers.list(all=True, filters={"label": f"{labels.EGRESS_ROOT}={facts['egress_dir']}"})
        ],
    }
    for container in left["sandboxes"] + left["egress proxies"]:  # never leave them to other tests
        client.containers.get(container).remove(force=True)
    assert not any(left.values()), f"left behind: {left}"


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


def _mention(stack: Stack, slack: FakeSlack, text: str) -> dict:
    """A signed mention, posted to the bot's /slack/events as Slack posts it."""
    mention = slack.app_mention(ASKER, CHANNEL, text)
    url = f"http://127.0.0.1:{stack.port('bot', 3000)}/slack/events"
    status, body = slack.deliver_http(url, slack.event_callback(mention), SIGNING_SECRET)
    assert status == 200, (status, body, stack.logs("bot"))
    return mention


def _final_reaction(slack: FakeSlack, ts: str, stack: Stack, timeout: float) -> set[str]:
    finals = {"white_check_mark", "x", "warning", "no_entry_sign"}
    try:
        slack.wait_until(lambda: finals & set(slack.get_message(CHANNEL, ts).reactions), timeout=timeout)
    except Exception:  # noqa: BLE001 - say what the services said
        raise AssertionError(f"no final reaction on {ts}\n{stack.logs('bot', 'worker', 'gateway')}") from None
    return finals & set(slack.get_message(CHANNEL, ts).reactions)


def _job_of(redis: Redis, ts: str) -> str:
    ids = [k.decode().rsplit(":", 1)[1] for k in redis.keys("rq:job:*") if ts.replace(".", "_") in k.decode()]
    assert len(ids) == 1, ids
    return ids[0]


@pytest.mark.docker
@pytest.mark.slow
def test_compose_up_from_nothing(stack, docker_client: docker.DockerClient) -> None:
    stack, facts = stack
    slack, gemini = facts["slack"], facts["gemini"]
    times: dict[str, float] = {}
    started = time.monotonic()
    # The fakes' relays, on the address the stack's network will give the host.
    for port, target in facts["relay_to"].items():
        facts["relays"].append(TcpRelay(stack.gateway, port, int(target)))
    # The app image of this copy (a tag earlier runs share would be another tree's code),
    # then the README's quick start as it prints it: .env, up, doctor, a question.
    built = stack.run("build", timeout=900)
    assert built.returncode == 0, built.stderr[-6000:]
    gemini.script(Text("web is a demo repository: answer() returns 42.", chunks=3, delay=0.2))
    quick = stack.shell(readme_block("## Quick start", "docker compose up"), timeout=900)
    times["README quick start (builds included)"] = time.monotonic() - started
    assert quick.returncode == 0, f"{quick.stdout[-3000:]}\n{quick.stderr[-6000:]}\n{stack.logs()}"
    assert (stack.project / ".env").read_text().count("\n") == 5  # the five-line .env, written by the README
    assert "askbox: doctor: no problems" in quick.stderr, quick.stdout + quick.stderr[-3000:]
    assert "FAIL" not in quick.stdout and "ok    gateway: ready, keys for gemini" in quick.stdout, quick.stdout
    assert "answer() returns 42" in quick.stdout, quick.stdout + quick.stderr[-3000:]

    # One command built every image the worker needs, tagged as it expects them.
    for name, image in facts["built"].items():
        assert images.present(docker_client, image), f"{name} ({image}) not built\n{stack.logs('images')}"
    assert "skipping agent-cursor: ASKBOX_CURSOR_IMAGE=" in stack.logs("images")
    everything = docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project={stack.name}"})
    states = {c.labels["com.docker.compose.service"]: c.status for c in everything}
    assert states == {
        "preflight": "exited",
        "images": "exited",
        "redis": "running",
        "gateway": "running",
        "worker": "running",
        "dashboard": "running",
        "bot": "running",
    }, (states, stack.logs())

    port = stack.port("redis", 6379)
    # A client without the password is refused, by the composed Redis itself; so is a wrong one.
    assert _knock(port, b"PING") == b"-NOAUTH Authentication required.\r\n"
    assert _knock(port, b"AUTH wrong-password").startswith(b"-WRONGPASS")
    redis = Redis.from_url(f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0", socket_connect_timeout=2)
    try:
        wait_for(lambda: _workers(redis), 90, "the worker to register in Redis")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None
    times["worker registered"] = time.monotonic() - started

    # .dockerignore kept the user's .env and the tests out of the image; images/ is in it.
    check = stack.run(
        "exec",
        "-T",
        "worker",
        "sh",
        "-c",
        "test ! -e /opt/askbox/src/.env && test ! -e /opt/askbox/src/tests "
        "&& test -f /opt/askbox/src/images/sandbox/Dockerfile",
    )
    assert check.returncode == 0, check.stdout + check.stderr

    # A signed mention, through the bot in HTTP mode, answered by the Gemini CLI in a
    # sandbox through the composed gateway and the fake Gemini API, streamed into the thread.
    asked = time.monotonic()
    gemini.script(Text("answer() returns 42, in src/app.py.", chunks=6, delay=0.4))
    mention = _mention(stack, slack, "where is answer()?")
    assert _final_reaction(slack, mention["ts"], stack, 120) == {"white_check_mark"}
    replies = [m for m in slack.thread(CHANNEL, mention["ts"]) if m.is_bot and not m.deleted]
    assert any("returns 42" in (m.text or "") + json.dumps(m.blocks or []) for m in replies), replies
    assert replies[0].edits >= 1  # progress streamed into the status message before the answer
    times["mention answered"] = time.monotonic() - asked

    # The README's way to ask without Slack; agent=cursor (the stand-in) uses an egress proxy.
    asked = time.monotonic()
    ask = stack.run(
        "exec",
        "-T",
        "worker",
        "askbox",
        "ask",
        "--repo",
        "demo",
        "--agent",
        "cursor",
        f"{QUICK} where is answer()?",
        timeout=120,
    )
    assert ask.returncode == 0, ask.stderr[-3000:]
    assert "queued as" in ask.stderr and ask.stderr.strip().splitlines()[-1].startswith("askbox: answer"), ask.stderr
    times["exec ask answered"] = time.monotonic() - asked
    proxies = docker_client.containers.list(filters={"label": f"{labels.EGRESS_ROOT}={facts['egress_dir']}"})
    assert [p.labels.get(labels.EGRESS_DEPLOYMENT) for p in proxies] == [facts["deployment"]]
    # Its socket directory is where the worker named it, on the host: the same-path mount works.
    assert any(Path(m["Source"]).parent == facts["egress_dir"] for m in proxies[0].attrs["Mounts"])

    # The worker killed mid-answer, then `up`: the question ends with exactly one final.
    gemini.script(Text("A slow answer, " * 10, chunks=20, delay=1.0), Text("Answered after the restart."))
    killed = time.monotonic()
    slow = _mention(stack, slack, "explain everything slowly")
    job_id = wait_for(lambda: _running(redis, slow["ts"]), 60, "the slow question to run")
    wait_for(
        lambda: [r for r in gemini.requests if r.is_generate and "slowly" in r.text()], 60, "the slow answer to start"
    )
    assert stack.run("kill", "worker").returncode == 0
    assert stack.run("up", "-d", "worker", timeout=300).returncode == 0
    _final_reaction(slack, slow["ts"], stack, 240)
    time.sleep(3)  # a second final would come right after the first
    assert redis.exists(keys.final_outbox(job_id)) == 1  # one final written (jobs/outbox.py)
    texts = [m.text or "" for m in slack.thread(CHANNEL, slow["ts"]) if m.is_bot and not m.deleted]
    finals = [t for t in texts if "Answered after the restart" in t or "went wrong" in t or "retried" in t]
    assert len(finals) <= 1, texts
    times["killed worker's question ended"] = time.monotonic() - killed
    # Its orphaned sandbox was reaped by the new worker (its owner is gone from Redis).
    wait_for(
        lambda: (
            not docker_client.containers.list(
                all=True, filters={"label": [f"{labels.SANDBOX}={facts['deployment']}", f"askbox.job={job_id}"]}
            )
        ),
        60,
        "the killed worker's sandbox to be reaped",
    )

    # `restart redis` with a question waiting: it is still there and answered afterwards.
    assert stack.run("stop", "worker", timeout=120).returncode == 0
    waiting = _mention(stack, slack, "still there after a Redis restart?")
    wait_for(lambda: _job_of(redis, waiting["ts"]), 10, "the question to be queued")
    assert stack.run("restart", "redis", timeout=120).returncode == 0
    assert stack.run("start", "worker", timeout=120).returncode == 0
    assert _final_reaction(slack, waiting["ts"], stack, 180) == {"white_check_mark"}

    # The dashboard: on the host's loopback, behind basic auth, reading the same Redis,
    # and its log names the host port users open.
    dashboard = facts["dashboard_port"]
    wait_for(lambda: _dashboard_answers(dashboard), 30, "the dashboard to answer")
    assert _get(dashboard, "/", auth=False)[0] == 401
    status, body = _get(dashboard, "/0/data/workers.json")
    assert status == 200 and len(json.loads(body)["workers"]) == 1, body[:500]
    assert f"dashboard on http://127.0.0.1:{dashboard}/" in stack.logs("dashboard")

    # The README's clean-up, as printed: nothing of askbox's is left, not even the host
    # folders Docker made for the same-path mounts.
    cleaned = time.monotonic()
    cleanup = stack.shell(readme_block("### Clean up", "askbox cleanup"), timeout=300)
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr[-3000:]
    times["README clean-up"] = time.monotonic() - cleaned
    _assert_nothing_left(stack, docker_client, facts)
    for folder in (facts["egress_dir"], facts["snapshots"], facts["gateway_dir"]):
        assert not folder.exists(), f"{folder} left after the README's clean-up"
    print("compose: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))


def _running(redis: Redis, ts: str) -> str | None:
    try:
        job_id = _job_of(redis, ts)
    except AssertionError:
        return None
    return job_id if jobs_queue.fetch(redis, job_id).get_meta(refresh=True).get("state") == "running" else None


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


@pytest.mark.docker
def test_compose_up_behind_the_docker_filter(filter_stack, docker_client: docker.DockerClient) -> None:
    """compose.docker-filter.yaml as the README gives it: the worker has no Docker socket,
    only the filter's, and writes none of what containers bind (issue 17), yet a mention
    is answered from a snapshot the filter sealed, and a cursor question through an egress
    proxy whose directories the filter made."""
    stack, facts = filter_stack
    slack, gemini = facts["slack"], facts["gemini"]
    for port, target in facts["relay_to"].items():
        facts["relays"].append(TcpRelay(stack.gateway, port, int(target)))
    up = stack.run("up", "-d", "--build", timeout=900)
    assert up.returncode == 0, f"{up.stderr[-6000:]}\n{stack.logs()}"
    everything = docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project={stack.name}"})
    states = {c.labels["com.docker.compose.service"]: c.status for c in everything}
    assert states == {
        "preflight": "exited",
        "images": "exited",
        "redis": "running",
        "gateway": "running",
        "worker": "running",
        "dashboard": "running",
        "bot": "running",
        "docker-filter": "running",
    }, (states, stack.logs())
    redis = Redis.from_url(
        f"redis://:{REDIS_PASSWORD}@127.0.0.1:{stack.port('redis', 6379)}/0", socket_connect_timeout=2
    )
    try:
        wait_for(lambda: _workers(redis), 120, "the worker to register in Redis")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None

    # In the worker: no socket but the filter's; the sealed snapshots and egress sockets
    # read-only (root and DAC_OVERRIDE notwithstanding); its staging area writable.
    snapshots, egress = facts["snapshots"], facts["egress_dir"]
    probe = stack.run(
        "exec",
        "-T",
        "worker",
        "sh",
        "-c",
        "test ! -S /var/run/docker.sock && test -S /run/askbox-docker/docker.sock; echo socket=$?; "
        f"mkdir {snapshots}/probe; echo snapshots=$?; mkdir {egress}/probe; echo egress=$?; "
        f"mkdir {snapshots}/staging/probe && rmdir {snapshots}/staging/probe; echo staging=$?",
    )
    assert ["socket=0", "snapshots=1", "egress=1", "staging=0"] == [
        line for line in probe.stdout.splitlines() if "=" in line
    ], probe.stdout + probe.stderr
    assert probe.stderr.count("Read-only file system") == 2, probe.stderr

    gemini.script(Text("answer() returns 42, in src/app.py.", chunks=3, delay=0.2))
    mention = _mention(stack, slack, "where is answer()?")
    assert _final_reaction(slack, mention["ts"], stack, 180) == {"white_check_mark"}
    replies = [m for m in slack.thread(CHANNEL, mention["ts"]) if m.is_bot and not m.deleted]
    assert any("returns 42" in (m.text or "") + json.dumps(m.blocks or []) for m in replies), replies
    [sealed] = [p for p in (snapshots / "sealed").glob("*/*") if not p.name.startswith(".")]
    swap = stack.run("exec", "-T", "worker", "sh", "-c", f"mv {sealed} {sealed}.aside || ln -s /var/run {sealed}.x")
    assert swap.returncode != 0 and "Read-only file system" in swap.stderr and sealed.is_dir(), swap.stderr

    ask = stack.run(
        "exec",
        "-T",
        "worker",
        "askbox",
        "ask",
        "--repo",
        "demo",
        "--agent",
        "cursor",
        f"{QUICK} where is answer()?",
        timeout=180,
    )
    assert ask.returncode == 0, ask.stderr[-3000:] + stack.logs("worker", "docker-filter")
    filter_log = stack.run("logs", "--no-color", "docker-filter", timeout=60).stdout
    for action in ("snapshots/seal", "egress/make"):
        assert f"did POST /askbox/{action}" in filter_log, filter_log
