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


# How askbox docker-filter's refusals begin (sandbox/docker_filter/policy.py uses it).
FILTER_PREFIX = "askbox docker-filter: "


def docker_failed(exc: Exception) -> SandboxInfraError:
    """A Docker call that failed: refused by askbox docker-filter (a policy decision, not an
    outage, so not "start the daemon"), or the daemon not reachable."""
    explanation = str(getattr(exc, "explanation", "") or "")
    if explanation.startswith(FILTER_PREFIX):
        return SandboxInfraError(
            f"refused by the Docker filter: {explanation.removeprefix(FILTER_PREFIX)} (the image or a mount "
            "is outside its policy: ASKBOX_DOCKER_FILTER_IMAGES, ASKBOX_DOCKER_FILTER_ALLOW_BINDS; see the "
            "filter's log)"
        )
    return docker_unreachable(exc)
