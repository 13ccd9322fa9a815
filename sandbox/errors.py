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
    if image.startswith("askbox/agent-cursor:"):
        # --offline skips this image: advising it would send the user round in a circle.
        return SandboxInfraError(
            f"image {image} not found. cursor-agent is only distributed from Cursor's download servers, so "
            "build it where they are reachable (`askbox images build agent-cursor`), set ASKBOX_CURSOR_IMAGE "
            "to a copy built elsewhere, or use the Gemini agent (ASKBOX_AGENT=gemini, or agent=gemini)."
        )
    return SandboxInfraError(
        f"image {image} not found. Build it with `askbox images build` "
        "(`askbox images build --offline` where no container registry is reachable)."
    )
