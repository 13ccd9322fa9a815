"""The sandbox's section of the settings tree (``ASKBOX_SANDBOX_*``, egress, deployment).

Loaded once by the process's entry point and handed down; nothing in ``sandbox/`` reads
the environment itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sandbox.allowlist import parse_allowlist
from sandbox.spec import Limits, parse_size


def _default_socket_root() -> Path:
    """`/run/askbox/egress` for root, else `~/.cache/askbox/egress`."""
    run = Path("/run")
    if os.geteuid() == 0 and run.is_dir():
        return run / "askbox" / "egress"
    return Path.home() / ".cache" / "askbox" / "egress"


class SandboxSettings(BaseSettings):
    """Where and under which limits runs happen: one deployment label, one runtime."""

    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    deployment: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9_.-]{1,128}$",
        description="Label of this deployment's sandboxes and proxies (two deployments on one host never touch each other's).",
    )
    sandbox_memory: str = Field(default="2g", description="Memory of one sandbox (swap equal: never swaps).")
    sandbox_cpus: float = Field(default=1.0, gt=0, description="CPU quota of one sandbox, in cores.")
    sandbox_pids: int = Field(default=256, ge=8, description="Processes of one sandbox.")
    sandbox_tmpfs: str = Field(default="256m", description="Size of each of a sandbox's tmpfs (/tmp, $HOME).")
    sandbox_timeout: float = Field(default=600.0, gt=0, description="Wall-clock deadline of one run, seconds.")
    sandbox_runtime: str | None = Field(
        default=None, description="Container runtime (runsc for gVisor); empty: Docker's default (runc)."
    )
    egress_allow: str = Field(
        default="",
        description="Egress allowlist replacing the agent's own (host, host:port, *.domain, [v6]:port; comma-separated).",
    )
    egress_socket_dir: Path = Field(
        default_factory=_default_socket_root,
        description="Host directory of the egress proxies' Unix sockets (same path in the worker).",
    )
    # `askbox images build --offline` debootstraps from it; empty: the host's apt's Debian archive.
    debian_mirror: str | None = Field(
        default=None,
        description="Debian archive `askbox images build --offline` debootstraps from; empty: the one the host's apt uses.",
    )

    @field_validator("sandbox_memory", "sandbox_tmpfs")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_size(value)
        return value

    @field_validator("egress_allow")
    @classmethod
    def _allow(cls, value: str) -> str:
        parse_allowlist(value)
        return value

    @field_validator("sandbox_runtime")
    @classmethod
    def _runtime(cls, value: str | None) -> str | None:
        return value or None

    def egress_entries(self) -> tuple[str, ...]:
        """``ASKBOX_EGRESS_ALLOW`` as entries; empty when unset (agents then use their own)."""
        return tuple(e.strip() for e in self.egress_allow.split(",") if e.strip())

    def limits(self) -> Limits:
        return Limits(
            memory=parse_size(self.sandbox_memory),
            cpus=self.sandbox_cpus,
            pids=self.sandbox_pids,
            tmpfs=parse_size(self.sandbox_tmpfs),
            timeout=self.sandbox_timeout,
        )
