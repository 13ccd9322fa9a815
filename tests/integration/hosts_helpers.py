"""Worker "hosts" on this machine, for the multi-host tests: each its own network
namespace (``ip netns``), joined to the root namespace by a veth pair on a private /30
that exists only on these veths (the namespace has no other route: nothing it sends can
leave the machine), its own ``dockerd`` (own data root, exec root, socket, pidfile and
cgroup parent; no bridge, no iptables: sandboxes run with network "none" and the egress
proxy with the namespace's own "host" network), and its own hostname for the processes
started in it (a UTS namespace), which is what a sandbox's owner label records.

``dockerd`` is started with ``nsenter --net`` rather than ``ip netns exec``: the latter
also remounts /sys for the namespace, which hides the cgroup mounts from dockerd ("Devices
cgroup isn't mounted").
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker

from tests.integration.pipeline_helpers import wait_for

# The /30s are taken from here, skipping any that overlaps an address or route this
# machine already has.
POOL = ipaddress.ip_network("10.213.0.0/16")


def tools_missing() -> list[str]:
    return [tool for tool in ("ip", "nsenter", "unshare", "dockerd", "docker") if shutil.which(tool) is None]


def _taken() -> list[ipaddress.IPv4Network]:
    seen = []
    for command in (["ip", "-4", "-o", "addr"], ["ip", "-4", "route"]):
        for word in subprocess.run(command, capture_output=True, text=True, check=True).stdout.split():
            try:
                seen.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    return [net for net in seen if net.version == 4 and net.prefixlen > 0]


def free_subnets(count: int, seed: int) -> list[ipaddress.IPv4Network]:
    taken = _taken()
    subnets = list(POOL.subnets(new_prefix=30))
    found: list[ipaddress.IPv4Network] = []
    for i in range(len(subnets)):
        net = subnets[(seed + i) % len(subnets)]
        if not any(net.overlaps(other) for other in taken + found):
            found.append(net)
            if len(found) == count:
                return found
    raise RuntimeError(f"no free /30 left in {POOL}")


@dataclass
class Host:
    """One worker host: ``name`` is also its hostname."""

    name: str
    subnet: ipaddress.IPv4Network
    root: Path  # its files: docker data root, repo mirror, egress sockets, logs
    netns: str = ""
    run_dir: Path = Path()
    dockerd: subprocess.Popen | None = None
    steps: list[str] = field(default_factory=list)  # what was set up, for teardown

    def __post_init__(self) -> None:
        self.netns = f"askbox-{self.name}"
        self.run_dir = Path(f"/run/askbox-{self.name}")  # short: AF_UNIX paths are limited to 108 bytes
        self.veth = f"v{self.name[-12:]}"  # interface names: 15 characters at most
        hosts = list(self.subnet.hosts())
        self.root_address, self.address = str(hosts[0]), str(hosts[1])

    @property
    def docker_host(self) -> str:
        return f"unix://{self.run_dir}/docker.sock"

    @property
    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_host, timeout=60)

    @property
    def egress_dir(self) -> Path:
        return self.root / "egress"

    def network_up(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        self.steps.append("netns")
        subprocess.run(
            ["ip", "link", "add", self.veth + "r", "type", "veth", "peer", "name", self.veth + "n"], check=True
        )
        self.steps.append("veth")
        inside = ["ip", "netns", "exec", self.netns]
        for command in (
            ["ip", "link", "set", self.veth + "n", "netns", self.netns],
            ["ip", "addr", "add", f"{self.root_address}/30", "dev", self.veth + "r"],
            ["ip", "link", "set", self.veth + "r", "up"],
            [*inside, "ip", "addr", "add", f"{self.address}/30", "dev", self.veth + "n"],
            [*inside, "ip", "link", "set", self.veth + "n", "up"],
            [*inside, "ip", "link", "set", "lo", "up"],
        ):
            subprocess.run(command, check=True)

    def routes(self) -> str:
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, "ip", "-4", "route"], capture_output=True, text=True, check=True
        ).stdout

    def start_dockerd(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.egress_dir.mkdir(parents=True, exist_ok=True)
        self.egress_dir.chmod(0o755)
        log = (self.root / "dockerd.log").open("w")
        self.dockerd = subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{self.netns}",
                "dockerd",
                "--data-root",
                str(self.root / "docker"),
                "--exec-root",
                str(self.run_dir / "exec"),
                "-H",
                self.docker_host,
                "--pidfile",
                str(self.run_dir / "docker.pid"),
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--cgroup-parent",
                f"askbox-{self.name}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.steps.append("dockerd")

        def answers() -> bool:
            if self.dockerd and self.dockerd.poll() is not None:
                raise RuntimeError(f"dockerd of {self.name} exited:\n{self.dockerd_log()}")
            try:
                return bool(self.client.ping())
            except Exception:  # noqa: BLE001 - not up yet
                return False

        wait_for(answers, 60, f"the dockerd of {self.name}", every=0.2)

    def dockerd_log(self, lines: int = 20) -> str:
        path = self.root / "dockerd.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def load(self, archive: Path) -> subprocess.Popen:
        """``docker load`` of a ``docker save`` archive into this host's daemon (in the background)."""
        return subprocess.Popen(
            ["docker", "-H", self.docker_host, "load", "-i", str(archive)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def command(self, *argv: str) -> list[str]:
        """``argv`` run on this host: in its network namespace, under its hostname."""
        return [
            "nsenter",
            f"--net=/run/netns/{self.netns}",
            "unshare",
            "--uts",
            "sh",
            "-c",
            'hostname "$0" && exec "$@"',
            self.name,
            *argv,
        ]

    def stop(self) -> None:
        """Everything this host set up, in reverse; tolerant of a half-made host."""
        if "dockerd" in self.steps:
            self._stop_dockerd()
        for mount in sorted(_mounts_under(self.run_dir, self.root), reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        if "veth" in self.steps:  # gone with the namespace when it was moved; else here
            subprocess.run(["ip", "link", "del", self.veth + "r"], capture_output=True)
        if "netns" in self.steps:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        for base in Path("/sys/fs/cgroup").glob(f"*/askbox-{self.name}"):
            for child in sorted(base.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                try:
                    child.rmdir()
                except OSError:
                    pass
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.root / "docker", ignore_errors=True)

    def _stop_dockerd(self) -> None:
        assert self.dockerd is not None
        if self.dockerd.poll() is None:
            try:  # its containers first: the egress proxies, any sandbox a failed test left
                client = self.client
                for container in client.containers.list(all=True):
                    container.remove(force=True)
            except Exception:  # noqa: BLE001 - a daemon that does not answer is stopped below
                pass
            self.dockerd.send_signal(signal.SIGTERM)
            try:
                self.dockerd.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.dockerd.pid, signal.SIGKILL)
                self.dockerd.wait()
        # Its containerd (a child) goes with it; give it a moment to release its mounts.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _processes_using(self.run_dir):
            time.sleep(0.2)


def _mounts_under(*roots: Path) -> list[str]:
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1]
        if any(target == str(r) or target.startswith(f"{r}/") for r in roots):
            found.append(target)
    return found


def _processes_using(path: Path) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(path).encode() in cmdline.read_bytes():
                return True
        except OSError:
            continue
    return False
