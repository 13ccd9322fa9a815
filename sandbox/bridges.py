"""Unix sockets on the host, reached from inside a sandbox as 127.0.0.1:PORT.

A sandbox has no network (``network_mode=none``): loopback only. Each service it may
use (the egress proxy, the model gateway) listens on a Unix socket in a host directory;
that directory is mounted read-only into the container and socat, started before the
command, bridges ``127.0.0.1:PORT`` to the socket. The command starts only once every
bridge listens, so the agent's first connection never races the bridge.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class SocketBridge(BaseModel):
    """One host socket (``host_dir/socket``), seen inside as ``127.0.0.1:port``."""

    model_config = ConfigDict(frozen=True)

    host_dir: Path
    socket: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    port: int = Field(gt=0, lt=65536)
    mount_point: str = Field(pattern=r"^/run/askbox-[a-z-]+$")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def bridge_command(bridges: Sequence[SocketBridge], command: Sequence[str]) -> list[str]:
    """``command`` wrapped so that it runs once every bridge listens (needs sh, socat, grep)."""
    script = ""
    for bridge in bridges:
        target = shlex.quote(f"UNIX-CONNECT:{bridge.mount_point}/{bridge.socket}")
        # backlog: with socat's default of 5, a burst of connections has its SYNs dropped
        # and each retried a second later (measured: 500 connections took 72 s, now < 1 s).
        script += f"socat TCP-LISTEN:{bridge.port},bind=127.0.0.1,reuseaddr,fork,backlog=1024 {target} & "
    for bridge in bridges:
        # /proc/net/tcp lists 127.0.0.1:PORT in LISTEN (0A) state once socat is ready.
        script += f"while ! grep -q ':{bridge.port:04X} 00000000:0000 0A' /proc/net/tcp; do sleep 0.01; done; "
    script += 'exec "$@"'
    return ["/bin/sh", "-c", script, "askbox-bridge", *command]
