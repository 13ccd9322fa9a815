"""The allowlisting egress proxy: one Squid per allowlist, shared by the runs that use it.

Squid runs in the host's network namespace (so an allowlisted ``127.0.0.1:PORT`` means
the host's loopback, exactly as the worker would reach it) and is exposed only as a Unix
socket in a host directory. Sandboxes get that directory mounted and bridge it to
``127.0.0.1:3128`` inside their own empty network namespace.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import docker
from docker.errors import APIError, NotFound
from docker.types import LogConfig, Mount

from sandbox import labels
from sandbox.allowlist import AllowEntry, allowlist_key, squid_config
from sandbox.bridges import SocketBridge
from sandbox.errors import SandboxInfraError, image_missing

SOCKET_NAME = "proxy.sock"
MOUNT_POINT = "/run/askbox-egress"
PROXY_UID = 10002  # the egress image's unprivileged user
PROXY_PORT_IN_SANDBOX = 3128


class EgressProxies:
    """Where proxies come from (image) and where their sockets live (a host directory).

    The Docker client is passed per call, so this can be configured before Docker is up."""

    def __init__(self, image: str, socket_root: Path) -> None:
        self.image = image
        self.socket_root = socket_root

    def ensure(self, client: docker.DockerClient, entries: tuple[AllowEntry, ...], wait: float = 30.0) -> Path:
        """Start (or reuse) the proxy for this allowlist; return the host directory of its socket."""
        key = allowlist_key(entries)
        name = self.name(entries)
        directory = self.socket_root / key
        socket_path = directory / SOCKET_NAME
        container = _get(client, name)
        if container is not None and container.status == "running" and socket_path.is_socket():
            return directory
        if container is not None and container.status != "running":
            container.remove(force=True)
            container = None
        if container is None:
            self._start(client, name, key, entries, directory)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if socket_path.is_socket():
                return directory
            running = _get(client, name)
            if running is None or running.status in {"exited", "dead"}:
                logs = running.logs(tail=20).decode(errors="replace") if running else ""
                raise SandboxInfraError(f"egress proxy {name} failed to start: {logs.strip()}")
            time.sleep(0.05)
        raise SandboxInfraError(f"egress proxy {name} did not open {socket_path} within {wait:.0f} s")

    def name(self, entries: tuple[AllowEntry, ...]) -> str:
        # The socket directory is part of the identity: two deployments on one host
        # (or two test sessions) must not share, or stop, each other's proxies.
        root = hashlib.sha256(str(self.socket_root).encode()).hexdigest()[:6]
        return f"askbox-egress-{root}-{allowlist_key(entries)}"

    def decisions(self, client: docker.DockerClient, entries: tuple[AllowEntry, ...], tail: int = 200) -> list[str]:
        """The proxy's recent allow/deny log lines, newest last."""
        container = _get(client, self.name(entries))
        if container is None:
            return []
        text = container.logs(stdout=True, stderr=False, tail=tail).decode(errors="replace")
        return [line for line in text.splitlines() if line.startswith("egress ")]

    def stop_all(self, client: docker.DockerClient) -> int:
        found = client.containers.list(
            all=True,
            sparse=True, filters={"label": f"{labels.EGRESS_ROOT}={self.socket_root}"}
        )
        for container in found:
            container.remove(force=True)
        return len(found)

    def _start(self, client: docker.DockerClient, name: str, key: str, entries: tuple[AllowEntry, ...], directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory.parent, 0o755)
        os.chown(directory, PROXY_UID, PROXY_UID)
        os.chmod(directory, 0o755)
        (directory / SOCKET_NAME).unlink(missing_ok=True)
        try:
            client.containers.run(
                self.image,
                name=name,
                detach=True,
                network_mode="host",
                user=f"{PROXY_UID}:{PROXY_UID}",
                read_only=True,
                tmpfs={"/tmp": "rw,nosuid,nodev,size=16m,mode=1777"},
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                init=True,
                pids_limit=128,
                mem_limit="256m",
                environment={"ASKBOX_SQUID_CONF": squid_config(entries)},
                mounts=[Mount(MOUNT_POINT, str(directory), type="bind")],
                labels={
                    labels.EGRESS: key,
                    labels.EGRESS_ROOT: str(self.socket_root),
                    "askbox.egress.allow": ",".join(map(str, entries)),
                },
                restart_policy={"Name": "unless-stopped"},
                log_config=LogConfig(type="json-file", config={"max-size": "10m", "max-file": "2"}),
            )
        except docker.errors.ImageNotFound as exc:
            raise image_missing(self.image) from exc
        except APIError as exc:
            if exc.status_code != 409:  # 409: another process started it first; wait for it
                raise SandboxInfraError(f"cannot start egress proxy {name}: {exc.explanation}") from exc


def _get(client: docker.DockerClient, name: str):
    try:
        return client.containers.get(name)
    except NotFound:
        return None


def egress_bridge(directory: Path) -> SocketBridge:
    """How a sandbox reaches the proxy whose socket is in ``directory``."""
    return SocketBridge(host_dir=directory, socket=SOCKET_NAME, port=PROXY_PORT_IN_SANDBOX, mount_point=MOUNT_POINT)


PROXY_URL = f"http://127.0.0.1:{PROXY_PORT_IN_SANDBOX}"
PROXY_ENV = {
    "HTTPS_PROXY": PROXY_URL,
    "HTTP_PROXY": PROXY_URL,
    "https_proxy": PROXY_URL,
    "http_proxy": PROXY_URL,
    "NODE_USE_ENV_PROXY": "1",
    "NO_PROXY": "",
    "no_proxy": "",
}
