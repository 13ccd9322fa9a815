"""Nothing askbox starts outlives its use: a CLI run's egress proxy, a sandbox whose worker
is gone under another host name, and `askbox cleanup` removes one deployment's things only.

Real Docker, real Redis, real `askbox` processes; the containers are the real sandbox and
egress-proxy images.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest
from rq import Worker

from jobs.worker import owner_worker_alive
from sandbox import labels
from sandbox.allowlist import parse_allowlist
from sandbox.egress import EgressProxies
from sandbox.reaper import reap
from tests.conftest import DEPLOYMENT
from tests.integration.pipeline_helpers import ASKBOX, ROOT

pytestmark = [pytest.mark.docker]


def _proxies(client, root) -> list:  # type: ignore[no-untyped-def]
    return client.containers.list(all=True, filters={"label": f"{labels.EGRESS_ROOT}={root}"})


def test_a_cli_run_leaves_no_egress_proxy(docker_client, built_images, tmp_path) -> None:
    root = tmp_path / "egress"
    root.mkdir()
    os.chmod(root, 0o755)
    env = {**os.environ, "ASKBOX_EGRESS_ALLOW": "localhost:9", "ASKBOX_EGRESS_SOCKET_DIR": str(root)}
    result = subprocess.run(
        [ASKBOX, "sandbox", "run", "--", "sh", "-c", "test -S /run/askbox-egress/proxy.sock"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr  # it did run behind a proxy of its own
    assert _proxies(docker_client, root) == []
    assert list(root.glob("*/runs/run-*")) == []  # and its socket directory went with the run


def _sandbox_like(client, image: str, **extra: str):  # type: ignore[no-untyped-def]
    """A container labelled as a question's sandbox started by a worker in another container."""
    run_id = f"leftover-{uuid.uuid4().hex[:8]}"
    return client.containers.run(
        image,
        ["sleep", "300"],
        detach=True,
        network_mode="none",
        labels={
            labels.SANDBOX: DEPLOYMENT,
            labels.RUN_ID: run_id,
            labels.OWNER: "another-container:7:12345",
            labels.DEADLINE: str(int(time.time()) + 3600),
            **extra,
        },
    )


def test_a_sandbox_whose_worker_is_gone_is_reaped_whatever_its_host_name(
    docker_client, sandbox_image, redis_client
) -> None:
    alive_name = f"alive-{uuid.uuid4().hex[:6]}"
    redis_client.hset(Worker.redis_worker_namespace_prefix + alive_name, "birth", "now")  # registered
    orphan = _sandbox_like(docker_client, sandbox_image, **{labels.WORKER: f"gone-{uuid.uuid4().hex[:6]}"})
    kept = _sandbox_like(docker_client, sandbox_image, **{labels.WORKER: alive_name})
    try:
        removed = reap(docker_client, DEPLOYMENT, is_alive=owner_worker_alive(redis_client))
        assert removed == [orphan.labels[labels.RUN_ID]]
        # The live worker's run stays (another host's owner, deadline ahead): not ours to judge.
        assert docker_client.containers.get(kept.id).status == "running"
    finally:
        for container in (orphan, kept):
            try:
                container.remove(force=True)
            except Exception:  # noqa: BLE001 - reaped already
                pass


def test_cleanup_removes_one_deployments_things_only(docker_client, built_images, sandbox_image, tmp_path) -> None:
    root = tmp_path / "egress"
    root.mkdir()
    os.chmod(root, 0o755)
    mine, theirs = (
        EgressProxies(built_images["egress-proxy"], root, deployment=d) for d in (DEPLOYMENT, "other-deployment")
    )
    entries = parse_allowlist("localhost:9")
    mine.ensure(docker_client, entries, "run-a")
    theirs.ensure(docker_client, entries, "run-b")
    sandbox = _sandbox_like(docker_client, sandbox_image)
    try:
        env = {**os.environ, "ASKBOX_EGRESS_SOCKET_DIR": str(root)}
        result = subprocess.run(
            [ASKBOX, "cleanup", "--deployment", DEPLOYMENT],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "removed 1 sandbox container(s) and 1 egress proxy(ies)" in result.stderr
        left = [c.labels[labels.EGRESS_DEPLOYMENT] for c in _proxies(docker_client, root)]
        assert left == ["other-deployment"]  # the other deployment's proxy, same socket root, untouched
    finally:
        theirs.stop_all(docker_client)
        mine.stop_all(docker_client)
        try:
            sandbox.remove(force=True)
        except Exception:  # noqa: BLE001 - removed by the cleanup
            pass
