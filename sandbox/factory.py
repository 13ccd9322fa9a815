"""A Sandbox wired from its settings section: the one place settings meet Docker."""

from __future__ import annotations

from sandbox import images
from sandbox.egress import EgressProxies
from sandbox.runner import Sandbox
from sandbox.settings import SandboxSettings


def sandbox_from_settings(settings: SandboxSettings) -> Sandbox:
    return Sandbox(
        egress=EgressProxies(images.tag("egress-proxy"), settings.egress_socket_dir, deployment=settings.deployment),
        deployment=settings.deployment,
    )
