"""Small helpers for running one command in the sandbox in tests."""

from __future__ import annotations

from pathlib import Path

from sandbox import Outcome, Sandbox, SandboxSpec
from sandbox.spec import Limits


def run_cmd(
    sandbox: Sandbox,
    image: str,
    script: str,
    repo: Path | None = None,
    **limits: object,
) -> tuple[Outcome, str, str]:
    """Run ``bash -c script``; return (outcome, stdout, stderr)."""
    spec = SandboxSpec(
        image=image,
        command=["bash", "-c", script],
        repo=repo,
        limits=Limits(**{"timeout": 60, **limits}),
    )
    out: list[str] = []
    err: list[str] = []
    with sandbox.run(spec) as run:
        for line in run:
            (out if line.stream == "stdout" else err).append(line.text)
    assert run.outcome is not None
    return run.outcome, "\n".join(out), "\n".join(err)
