"""Shared fixtures: the real Docker engine, askbox's images, and leak checks; the tiers.

Tests that need Docker (or Redis) fail in CI (CI=true) when it is missing, and skip
locally with the reason printed.

Tiers (markers, given here by where a test lives, so no test can forget its own):
``unit`` is everything under tests/unit/ (no Docker, Redis, network or askbox process:
`make check` runs it in seconds); ``integration`` is everything else; ``slow`` is added
by the modules that bring up whole deployments (compose, the fault suite, Sentinel, two
hosts) on top of ``integration``.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import pytest
import redis

from sandbox import images, labels
from sandbox.egress import SELF_TEST_LABEL, EgressProxies
from sandbox.runner import Sandbox

if TYPE_CHECKING:
    from xdist.workermanage import WorkerController

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Under pytest-xdist each test process is one of "gw0", "gw1", ...; it inherits the
# controller's environment, so what must differ per process is derived from this.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
# This session's sandboxes (and its worker processes', which inherit the environment) carry
# their own deployment label, so concurrent test sessions, and the parallel processes of
# one session, never see, reap or clean up each other's containers on one Docker host.
DEPLOYMENT = os.environ.setdefault("ASKBOX_DEPLOYMENT", f"test-{os.getpid()}-{uuid.uuid4().hex[:6]}")
if XDIST_WORKER and not DEPLOYMENT.endswith(f"-{XDIST_WORKER}"):
    DEPLOYMENT = os.environ["ASKBOX_DEPLOYMENT"] = f"{DEPLOYMENT}-{XDIST_WORKER}"


UNIT_DIR = Path(__file__).parent / "unit"
# Modules whose tests share something of the machine's between them (a dockerd of their
# own with a fixed bridge, network namespaces, compose's project and host folders): under
# pytest-xdist (`--dist loadgroup`) each runs whole in one process, beside the others.
ONE_PROCESS_EACH = {"test_faults", "test_two_hosts", "test_compose", "test_sentinel"}


# tryfirst: pytest-xdist reads the xdist_group mark in its own pytest_collection_modifyitems.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        unit = item.path.is_relative_to(UNIT_DIR)
        item.add_marker(pytest.mark.unit if unit else pytest.mark.integration)
        if item.path.stem in ONE_PROCESS_EACH:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


def pytest_xdist_node_collection_finished(node: WorkerController, ids: list[str]) -> None:
    """Under `--dist loadgroup`, refuse the run if the groups did not take: xdist marks a
    grouped test by suffixing its node id with `@group`, and a pytest that ignores the
    suffix (9.2 does) would send one module's tests to several processes at once (two
    compose stacks then built one image tag side by side)."""
    ungrouped = [i for i in ids if Path(i.split("::")[0]).stem in ONE_PROCESS_EACH and "@" not in i]
    if ungrouped and node.config.getvalue("dist") == "loadgroup":
        pytest.exit(
            f"pytest-xdist's groups did not apply (pytest {pytest.__version__}): {ungrouped[0]} has no "
            "@group suffix; install the versions requirements-dev.lock pins",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def unavailable(what: str, why: object) -> None:
    message = f"{what} unavailable: {why}"
    if IN_CI:
        pytest.fail(message + " (CI must provide it)", pytrace=False)
    print(f"\nSKIPPING: {message}", file=sys.stderr)
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no Docker here"
        unavailable("Docker engine", exc)
    return client


@pytest.fixture(scope="session")
def built_images(docker_client: docker.DockerClient) -> dict[str, str]:
    """The images the tests use, built if missing (from the offline base when it exists)."""
    wanted = ["sandbox", "egress-proxy", "agent-gemini", "agent-claude", "agent-codex"]
    missing = [n for n in wanted if not images.exists(docker_client, n)]
    if missing:
        try:
            docker_client.images.get(images.OFFLINE_BASE)
            base = images.OFFLINE_BASE
        except docker.errors.ImageNotFound:
            base = None
        images.build(docker_client, missing, base, lambda m: print(m, file=sys.stderr))
    return {n: images.tag(n) for n in wanted}


@pytest.fixture(scope="session")
def sandbox_image(built_images: dict[str, str]) -> str:
    return built_images["sandbox"]


@pytest.fixture(scope="session")
def egress_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("egress")
    os.chmod(root, 0o755)
    return root


@pytest.fixture(scope="session")
def sandbox(docker_client: docker.DockerClient, built_images: dict[str, str], egress_root: Path) -> Iterator[Sandbox]:
    # This session's deployment, like its workers': teardown removes their proxies too.
    proxies = EgressProxies(built_images["egress-proxy"], egress_root, deployment=DEPLOYMENT)
    yield Sandbox(docker_client, proxies, deployment=DEPLOYMENT)
    proxies.stop_all(docker_client)


def sandbox_containers(client: docker.DockerClient) -> list:
    """This session's question sandboxes (a worker's egress self-test at start-up runs one
    of its own, labelled, which is not counted). Sparse (no inspect each): runs remove their
    containers while we look. Labels and names are in ``.attrs["Labels"]`` / ``.attrs["Names"]``."""
    found = client.containers.list(all=True, sparse=True, filters={"label": f"{labels.SANDBOX}={DEPLOYMENT}"})
    return [c for c in found if labels.PREFIX + SELF_TEST_LABEL not in (c.attrs.get("Labels") or {})]


@pytest.fixture()
def no_leftovers(docker_client: docker.DockerClient) -> Iterator[None]:
    """Fails the test if any sandbox container outlives it."""
    assert sandbox_containers(docker_client) == [], "a sandbox container was left by an earlier test"
    yield
    left = sandbox_containers(docker_client)
    for container in left:
        try:
            container.remove(force=True)
        except docker.errors.APIError:  # being removed already, or gone
            pass
    assert left == [], f"sandbox containers left behind: {[c.attrs.get('Names') for c in left]}"


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "README.md").write_text("# demo repo\n")
    (root / "src" / "app.py").write_text("def answer():\n    return 42\n")
    return root


@pytest.fixture(scope="session")
def cursor_standin_image(docker_client: docker.DockerClient, sandbox_image: str) -> str:
    """cursor-agent cannot be downloaded here: a stand-in replaying real transcripts."""
    from tests.standins.build import build_cursor_standin

    return build_cursor_standin(docker_client, sandbox_image)


def _test_redis_url() -> str:
    """db 15, not 0: flushing it must never touch data a developer keeps in the default db.
    ASKBOX_TEST_REDIS_URL lets two test sessions on one machine use different dbs; each
    parallel process of a session counts down from it (gw0: 15, gw1: 14, ...)."""
    url = os.environ.get("ASKBOX_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    if not XDIST_WORKER:
        return url
    base, _, db = url.rpartition("/")
    number = int(db or 0) - int(XDIST_WORKER.removeprefix("gw"))
    if number < 0:
        raise RuntimeError(f"{url}: too few Redis dbs below it for test process {XDIST_WORKER}")
    return f"{base}/{number}"


REDIS_TEST_URL = _test_redis_url()


@pytest.fixture()
def redis_client() -> Iterator[redis.Redis]:
    """A real Redis: db 15 of the local server, emptied before and after."""
    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        unavailable("Redis", exc)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()
