"""What one sandboxed run is: image, command, mounts, limits, egress."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sandbox.bridges import SocketBridge
from sandbox.users import SANDBOX_USER

WORKSPACE = "/workspace"
HOME = "/home/agent"

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: str | int) -> int:
    """'512m', '1g', '1.5GiB' or a byte count -> bytes."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"not a size: {value!r} (use e.g. 512m, 2g or a byte count)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


class Limits(BaseModel):
    """Resource limits. Swap is always equal to memory: a run never swaps."""

    model_config = ConfigDict(frozen=True)

    memory: int = Field(default=parse_size("2g"), gt=4 * 1024**2)
    cpus: float = Field(default=1.0, gt=0)
    pids: int = Field(default=256, ge=8)
    tmpfs: int = Field(default=parse_size("256m"), gt=0, description="size of /tmp and of HOME, each")
    # Docker's default is 64 MiB; nothing an agent runs needs POSIX shared memory of that size.
    shm: int = Field(default=parse_size("16m"), gt=0, description="size of /dev/shm")
    nofile: int = Field(default=4096, ge=64, description="open files per process (soft and hard)")
    timeout: float = Field(default=600.0, gt=0, description="wall-clock deadline in seconds")
    log_size: str = "1m"

    @field_validator("memory", "tmpfs", "shm", mode="before")
    @classmethod
    def _size(cls, value: str | int) -> int:
        return parse_size(value)


class OutputCaps(BaseModel):
    """How much of a run's output we hold in memory at once, whatever it prints."""

    model_config = ConfigDict(frozen=True)

    max_line_bytes: int = 1024 * 1024
    stderr_tail_bytes: int = 16 * 1024


class Masks(BaseModel):
    """Paths under the mounted repository the command must not see, covered by an empty
    read-only file (files) or an empty read-only tmpfs (directories)."""

    model_config = ConfigDict(frozen=True)

    files: tuple[str, ...] = ()
    dirs: tuple[str, ...] = ()

    @field_validator("files", "dirs")
    @classmethod
    def _inside(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        for path in paths:
            parts = path.split("/")
            if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
                raise ValueError(f"not a path inside the repository: {path!r}")
        return paths


class SandboxSpec(BaseModel):
    """One run: which image, which command, which repository, under which limits."""

    model_config = ConfigDict(frozen=True)

    image: str
    command: list[str] = Field(min_length=1)
    repo: Path | None = Field(default=None, description="host directory mounted read-only at /workspace")
    masks: Masks = Field(default_factory=Masks, description="what of the repository stays hidden")
    env: dict[str, str] = Field(default_factory=dict, repr=False)  # visible in `docker inspect`: no secrets
    secret_env: dict[str, str] = Field(
        default_factory=dict,
        repr=False,
        description="variables (API keys) handed to the command over stdin, never in the container's "
        "config: `docker inspect` and the daemon's config.v2.json on disk do not show them",
    )
    stdin: bytes | None = Field(
        default=None,
        repr=False,
        description="written to the command's stdin, which is then closed (a prompt: never in argv, "
        "which `docker inspect` and the host's `ps` show)",
    )
    user: str = SANDBOX_USER
    limits: Limits = Field(default_factory=Limits)
    caps: OutputCaps = Field(default_factory=OutputCaps)
    egress_allow: tuple[str, ...] = Field(
        default=(), description="allowlist for the egress proxy; empty means no egress at all"
    )
    bridges: tuple[SocketBridge, ...] = Field(
        default=(), description="host Unix sockets the command reaches as 127.0.0.1:PORT (e.g. a model gateway)"
    )
    runtime: str | None = Field(default=None, description="e.g. 'runsc' for gVisor")
    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:16])
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("repo")
    @classmethod
    def _repo_is_dir(cls, repo: Path | None) -> Path | None:
        if repo is None:
            return None
        repo = repo.expanduser().resolve()
        if not repo.is_dir():
            raise ValueError(f"repository {repo} is not a directory")
        return repo

    @field_validator("secret_env")
    @classmethod
    def _one_line_each(cls, env: dict[str, str]) -> dict[str, str]:
        # One NAME=value line each on stdin (see container_config.secret_env_command).
        for name, value in env.items():
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"not an environment variable name: {name!r}")
            if "\n" in value or "\0" in value:
                raise ValueError(f"{name} must be one line")
        return env

    @field_validator("run_id")
    @classmethod
    def _label_safe(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", value):
            raise ValueError("may hold only letters, digits, '_', '.', '-'")
        return value
