"""The sandbox policy as data: the one container configuration a run gets.

Pure: a spec (and where its egress socket is, which deployment it belongs to, who owns it,
when it must end) in, the keyword arguments of docker-py's ``containers.create`` out. No
Docker, no clock, no process state; sandbox/runner.py makes the calls. So the policy that
the README's "The sandbox policy" states is read in one place, and tested in milliseconds
(tests/unit/test_container_config.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docker.types import LogConfig, Mount, Ulimit

from sandbox import labels
from sandbox.bridges import bridge_command
from sandbox.egress import PROXY_ENV, egress_bridge
from sandbox.spec import HOME, WORKSPACE, SandboxSpec

# The host's OOM killer picks a sandbox's processes before the worker's, Redis's or the
# daemon's (0). A process without CAP_SYS_RESOURCE cannot lower its own score.
OOM_SCORE_ADJ = 500
# Docker copies the host's /etc/resolv.conf (its resolvers, search domains) into every
# container, even with network "none". A sandbox has no DNS: it gets an empty file.
# /dev/null exists at the same path on the host and in the worker's container (compose).
EMPTY_FILE = "/dev/null"


def secret_env_command(names: list[str], command: list[str]) -> list[str]:
    """``command`` run with variables read from stdin first, one ``NAME=value`` line each,
    up to an empty line; the rest of stdin is the command's. POSIX ``read`` takes one byte
    at a time from a pipe, so nothing past that empty line is consumed."""
    script = 'while IFS= read -r askbox_kv && [ -n "$askbox_kv" ]; do export "$askbox_kv"; done; '
    script += "unset askbox_kv; " + 'exec "$@"'
    return ["/bin/sh", "-c", script, "askbox-env:" + ",".join(names), *command]


def stdin_payload(spec: SandboxSpec) -> bytes | None:
    """What the runner writes to the command's stdin: secret variables, then ``spec.stdin``."""
    if not spec.secret_env:
        return spec.stdin
    lines = "".join(f"{name}={value}\n" for name, value in spec.secret_env.items())
    return lines.encode() + b"\n" + (spec.stdin or b"")


def container_config(
    spec: SandboxSpec, *, egress_dir: Path | None, deployment: str, owner: str, deadline: float
) -> dict[str, Any]:
    """``client.containers.create(**container_config(...))`` for this run. ``deadline`` is
    the unix time by which the run must be over (the reaper's label)."""
    uid, _, gid = spec.user.partition(":")
    tmpfs_opts = f"rw,nosuid,nodev,size={spec.limits.tmpfs}"
    mounts = [Mount("/etc/resolv.conf", EMPTY_FILE, type="bind", read_only=True)]
    if spec.repo is not None:
        mounts.append(Mount(WORKSPACE, str(spec.repo), type="bind", read_only=True))
        # Over the repository's mount (the daemon orders mounts by depth): secrets hidden.
        mounts += [Mount(f"{WORKSPACE}/{path}", EMPTY_FILE, type="bind", read_only=True) for path in spec.masks.files]
    env = {"HOME": HOME, **spec.env}
    command = list(spec.command)
    if spec.secret_env:  # innermost: the bridges' socat never sees the keys
        command = secret_env_command(sorted(spec.secret_env), command)
    bridges = list(spec.bridges)
    if egress_dir is not None:
        bridges.append(egress_bridge(egress_dir))
        env.update(PROXY_ENV)
    for bridge in bridges:
        mounts.append(Mount(bridge.mount_point, str(bridge.host_dir), type="bind", read_only=True))
    if bridges:
        command = bridge_command(bridges, command)
    return {
        "image": spec.image,
        "command": command,
        "user": spec.user,
        "working_dir": WORKSPACE if spec.repo is not None else HOME,
        "environment": env,
        "labels": {
            labels.SANDBOX: deployment,
            labels.RUN_ID: spec.run_id,
            labels.OWNER: owner,
            labels.DEADLINE: str(int(deadline) + 1),
            **{labels.PREFIX + k: v for k, v in spec.labels.items()},
        },
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {
            "/tmp": f"{tmpfs_opts},mode=1777",
            HOME: f"{tmpfs_opts},mode=0700,uid={uid},gid={gid or uid}",
            **{f"{WORKSPACE}/{path}": "ro,nosuid,nodev,noexec,size=4k,mode=0555" for path in spec.masks.dirs},
        },
        "mounts": mounts,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "init": True,
        "ipc_mode": "private",
        "shm_size": spec.limits.shm,
        # the host's cgroup paths (with the container's id) stay out of /proc/self/cgroup
        "cgroupns": "private",
        "hostname": "sandbox",
        "ulimits": [
            Ulimit(name="core", soft=0, hard=0),  # no core dumps of an agent holding a key
            Ulimit(name="nofile", soft=spec.limits.nofile, hard=spec.limits.nofile),
        ],
        "oom_score_adj": OOM_SCORE_ADJ,
        "pids_limit": spec.limits.pids,
        "mem_limit": spec.limits.memory,
        "memswap_limit": spec.limits.memory,
        "nano_cpus": int(spec.limits.cpus * 1e9),
        "log_config": LogConfig(type="json-file", config={"max-size": spec.limits.log_size, "max-file": "1"}),
        "runtime": spec.runtime,
        "stdin_open": stdin_payload(spec) is not None,  # docker-py sets StdinOnce with it
        "tty": False,
    }
