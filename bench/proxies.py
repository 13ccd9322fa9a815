"""Removing the egress proxies a bench's workers started, when the bench ends.

Workers label each proxy with their deployment (``ASKBOX_DEPLOYMENT``: the test suite
sets one per process) and their socket root, and a proxy restarts unless stopped. Removal
must name both, or the proxy outlives the bench (it did, once per test run).
"""

from __future__ import annotations

from pathlib import Path

import docker

from sandbox import images
from sandbox.egress import EgressProxies
from sandbox.settings import SandboxSettings


def stop_proxies(client: docker.DockerClient, socket_root: Path) -> int:
    """Remove every proxy of this process's deployment under ``socket_root``; how many."""
    deployment = SandboxSettings().deployment
    return EgressProxies(images.tag("egress-proxy"), socket_root, deployment=deployment).stop_all(client)
