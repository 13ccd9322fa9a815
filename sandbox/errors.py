"""Infrastructure faults, each with a message that names the fix."""

from __future__ import annotations


class SandboxInfraError(RuntimeError):
    """Docker unreachable, image missing, runtime missing, egress proxy down."""


def docker_unreachable(detail: object) -> SandboxInfraError:
    return SandboxInfraError(
        f"Docker daemon not reachable ({detail}). Start it (`systemctl start docker` or "
        "`dockerd &`) or point DOCKER_HOST at it."
    )


def image_missing(image: str) -> SandboxInfraError:
    return SandboxInfraError(
        f"image {image} not found. Build it with `askbox images build` "
        "(`askbox images build --offline` where no container registry is reachable)."
    )
