"""The docker-filter's section of the settings tree (``ASKBOX_DOCKER_FILTER_*``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sandbox.docker_filter.policy import Policy


def _items(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


class DockerFilterSettings(BaseSettings):
    """Where the filter listens and forwards, and what it lets containers use."""

    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    docker_filter_socket: Path = Field(
        default=Path("/run/askbox-docker/docker.sock"),
        description="The filter's own socket, which the worker's DOCKER_HOST names.",
    )
    docker_filter_upstream: Path = Field(
        default=Path("/var/run/docker.sock"), description="The real Docker socket the filter forwards to."
    )
    # Repository prefixes of the images containers may be created from, comma-separated.
    docker_filter_images: str = Field(
        default="askbox/", description="Image name prefixes sandboxes may use (comma-separated)."
    )
    # The one repository whose containers (the egress proxies) may use the host's network.
    docker_filter_egress_image: str = Field(default="askbox/egress-proxy", description="The egress proxy's image name.")
    # Host directories sandboxes may mount (anything below, read-only), comma-separated,
    # besides the ASKBOX_REPOS paths: directories the worker cannot write. Never one
    # overlapping ASKBOX_REPO_SNAPSHOTS, the gateway's or the egress sockets' (refused).
    docker_filter_allow_binds: str = Field(
        default="",
        description="Further read-only directories sandboxes may mount (comma-separated; mount each into the filter too).",
    )
    docker_filter_max_body: int = Field(
        default=1 << 20, ge=4096, le=64 << 20, description="Largest request body the filter reads, in bytes."
    )

    @field_validator("docker_filter_allow_binds")
    @classmethod
    def _absolute(cls, value: str) -> str:
        for item in _items(value):
            if not os.path.isabs(item) or os.path.normpath(item) == "/":
                raise ValueError(f"{item!r} must be an absolute directory other than /")
        return value

    @field_validator("docker_filter_images")
    @classmethod
    def _prefixes(cls, value: str) -> str:
        if not _items(value):
            raise ValueError("name at least one image repository prefix, e.g. askbox/")
        return value

    def policy(
        self,
        deployment: str,
        egress_dir: Path,
        snapshot_dir: Path,
        gateway_dir: Path,
        read_only_dirs: Iterable[Path],
        runtime: str | None,
    ) -> Policy:
        """The policy for one deployment: its label, and the directories its containers bind:
        the egress root, the snapshots, the gateway's sockets and the repositories."""
        named: list[str | Path] = [*read_only_dirs, *_items(self.docker_filter_allow_binds)]
        dirs = {os.path.realpath(p) for p in named}
        return Policy(
            deployment=deployment,
            image_prefixes=_items(self.docker_filter_images),
            egress_image=self.docker_filter_egress_image,
            egress_dirs=(os.path.realpath(egress_dir),),
            read_only_dirs=tuple(sorted(dirs)),
            snapshot_dirs=(os.path.realpath(snapshot_dir),),
            gateway_dirs=(os.path.realpath(gateway_dir),),
            runtimes=frozenset({"runc", "runsc", *([runtime] if runtime else [])}),
        )
