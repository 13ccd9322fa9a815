"""Each security property is an attempt that must fail from inside a real sandbox."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import threading
import time
from pathlib import Path

import docker
import pytest

from sandbox import OutcomeKind
from tests.integration.sandbox_helpers import run_cmd

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leftovers")]


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        h.update(f"{path.relative_to(root)}|{st.st_mode}|{st.st_uid}|{st.st_mtime_ns}".encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def test_workspace_and_root_are_read_only(sandbox, sandbox_image, repo):
    before = tree_digest(repo)
    outcome, out, _ = run_cmd(
        sandbox,
        sandbox_image,
        "cat /workspace/src/app.py;"
        "for target in /workspace/new.txt /workspace/src/app.py /new.txt /etc/passwd /usr/bin/evil; do"
        "  if echo pwned >> $target 2>/dev/null; then echo WROTE $target; else echo DENIED $target; fi; done;"
        "rm -f /workspace/README.md 2>/dev/null && echo WROTE rm || echo DENIED rm;"
        "chmod 777 /workspace 2>/dev/null && echo WROTE chmod || echo DENIED chmod;"
        "echo ok > /tmp/scratch && cat /tmp/scratch; echo ok > $HOME/scratch && cat $HOME/scratch",
        repo=repo,
    )
    assert outcome.kind is OutcomeKind.OK, outcome
    assert "return 42" in out  # the repo is readable
    assert "WROTE" not in out
    assert out.count("DENIED") == 7
    assert out.count("\nok") == 2  # /tmp and HOME are writable tmpfs
    assert tree_digest(repo) == before


def test_no_capabilities_no_root_no_setuid_escalation(sandbox, suid_image):
    outcome, out, _ = run_cmd(
        sandbox,
        suid_image,
        "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status; id -u; "
        "ls -l /usr/local/bin/suid-id; echo euid-via-setuid=$(/usr/local/bin/suid-id -u); "
        "grep NoNewPrivs /proc/self/status",
    )
    assert outcome.kind is OutcomeKind.OK, outcome
    caps = [line.split()[1] for line in out.splitlines() if line.startswith("Cap")]
    assert caps == ["0000000000000000"] * 5
    assert "\n10001\n" in out
    assert "-rwsr-xr-x 1 root" in out  # the binary really is setuid root ...
    assert "euid-via-setuid=10001" in out  # ... and still grants nothing
    assert "NoNewPrivs:\t1" in out


@pytest.fixture(scope="module")
def suid_image(docker_client: docker.DockerClient, sandbox_image: str, tmp_path_factory) -> str:
    """The sandbox image plus a setuid-root binary, to prove setuid does not escalate."""
    context = tmp_path_factory.mktemp("suid")
    (context / "Dockerfile").write_text(
        f"FROM {sandbox_image}\nUSER root\n"
        "RUN cp /usr/bin/id /usr/local/bin/suid-id && chmod 4755 /usr/local/bin/suid-id\n"
        "USER 10001:10001\n"
    )
    tag = "askbox-test/suid:latest"
    docker_client.images.build(path=str(context), tag=tag, rm=True)
    return tag


@pytest.fixture()
def host_server():
    """A TCP server of our own on the host's 0.0.0.0 that the sandbox must not reach."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))
    server.listen()
    server.settimeout(0.2)
    hits: list[tuple] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except OSError:
                continue
            hits.append(peer)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], hits
    stop.set()
    thread.join()
    server.close()


def host_addresses(client: docker.DockerClient) -> list[str]:
    """Every address of this machine a container might try: loopback, bridge gateways, NICs."""
    addresses = {"127.0.0.1"}
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout
    addresses.update(a for a in out.split() if ":" not in a)
    for network in client.networks.list():
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
            if config.get("Gateway") and ":" not in config["Gateway"]:
                addresses.add(config["Gateway"])
    return sorted(addresses)


def test_host_server_unreachable_by_every_address(sandbox, sandbox_image, host_server, docker_client):
    port, hits = host_server
    # Prove the server is really there: the host itself reaches it.
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    time.sleep(0.3)
    assert len(hits) == 1
    addresses = host_addresses(docker_client)
    assert any(a != "127.0.0.1" for a in addresses), addresses
    probes = ";".join(
        f"if timeout 3 bash -c 'echo > /dev/tcp/{a}/{port}' 2>/dev/null; then echo REACHED {a}; "
        f"else echo BLOCKED {a}; fi"
        for a in addresses
    )
    outcome, out, _ = run_cmd(
        sandbox,
        sandbox_image,
        f"{probes}; ip route 2>/dev/null; cat /proc/net/route | wc -l; ls /sys/class/net; "
        "test -e /var/run/docker.sock && echo DOCKER_SOCKET || echo no-docker-socket",
    )
    assert outcome.kind is OutcomeKind.OK, outcome
    assert "REACHED" not in out
    assert out.count("BLOCKED") == len(addresses)
    assert out.split().count("lo") == 1 and "eth0" not in out  # loopback is the only interface
    assert "no-docker-socket" in out
    assert len(hits) == 1  # nothing from the sandbox arrived


def test_dns_resolution_fails(sandbox, sandbox_image):
    outcome, out, _ = run_cmd(
        sandbox,
        sandbox_image,
        "for name in example.com host.docker.internal gateway.docker.internal; do "
        "  getent hosts $name && echo RESOLVED $name || echo UNRESOLVED $name; done",
    )
    assert outcome.kind is OutcomeKind.OK
    assert "RESOLVED " not in out.replace("UNRESOLVED", "")
    assert out.count("UNRESOLVED") == 3


def test_fork_bomb_is_contained_and_host_stays_responsive(sandbox, sandbox_image):
    latencies: list[float] = []
    done = threading.Event()

    def probe_host() -> None:
        while not done.is_set():
            start = time.monotonic()
            subprocess.run(["true"], check=True)
            latencies.append(time.monotonic() - start)
            time.sleep(0.1)

    prober = threading.Thread(target=probe_host, daemon=True)
    prober.start()
    # Only bash builtins after the bomb: with the pids limit reached, nothing can fork.
    outcome, out, err = run_cmd(
        sandbox,
        sandbox_image,
        "bomb() { bomb | bomb & }; bomb; SECONDS=0; while (( SECONDS < 3 )); do :; done;"
        "read -r cur < /sys/fs/cgroup/pids/pids.current; read -r max < /sys/fs/cgroup/pids/pids.max;"
        "echo pids=$cur/$max; while :; do :; done",
        timeout=14,  # bash's own fork retries stall the bomb's shell for seconds on a busy machine
        pids=64,
    )
    done.set()
    prober.join()
    assert outcome.kind is OutcomeKind.TIMEOUT, outcome  # the bomb ran until its deadline ...
    assert "pids=64/64" in out  # ... pinned at the pids limit, not beyond
    assert "fork: retry: Resource temporarily unavailable" in err
    assert latencies and max(latencies) < 2.0, f"host stalled: max spawn latency {max(latencies):.2f} s"
    print(
        f"host spawn latency during fork bomb: median {sorted(latencies)[len(latencies) // 2] * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms over {len(latencies)} probes"
    )


def test_memory_hog_ends_as_oom(sandbox, sandbox_image):
    # The main process itself holds the memory (a command substitution), so the kernel
    # kills it, as it would an agent that reads a huge file into memory.
    outcome, out, _ = run_cmd(
        sandbox, sandbox_image, "x=$(head -c 2G /dev/zero | tr '\\0' a); echo survived", memory="64m"
    )
    assert outcome.kind is OutcomeKind.OOM, outcome
    assert outcome.message == "memory limit 64 MiB"
    assert outcome.cli_exit_code() == 137
    assert "survived" not in out


def test_a_child_killed_for_memory_leaves_the_run_to_its_main_process(sandbox, sandbox_image):
    # An agent's tool (here tail) is killed for memory; the agent carries on and answers.
    # The answer stands: the run is OK, whatever order Docker learns of the kill and the exit.
    outcome, out, err = run_cmd(sandbox, sandbox_image, "head -c 2G /dev/zero | tail; echo survived", memory="64m")
    assert outcome.kind is OutcomeKind.OK, outcome
    assert out == "survived"
    assert "Killed" in err


def test_cpu_hog_gets_no_more_than_its_quota(sandbox, sandbox_image):
    # Two busy loops for 3 s with a quota of half a core; the cgroup's own accounting from
    # inside (v1 or v2): the CPU time used (ns), and how often the kernel throttled the
    # group at its quota.
    outcome, out, _ = run_cmd(
        sandbox,
        sandbox_image,
        "if [ -r /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then t=/sys/fs/cgroup/cpu/cpu.stat;"
        " used() { cat /sys/fs/cgroup/cpuacct/cpuacct.usage; };"
        " else t=/sys/fs/cgroup/cpu.stat; used() { awk '/^usage_usec/ {printf \"%d\", $2 * 1000}' $t; }; fi;"
        "a=$(used); s=$(date +%s%N); yes >/dev/null & p1=$!; yes >/dev/null & p2=$!; sleep 3;"
        "kill $p1 $p2; b=$(used); e=$(date +%s%N);"
        "echo usage=$((b-a)) wall=$((e-s)) throttled=$(awk '/^nr_throttled/ {print $2}' $t)",
        cpus=0.5,
    )
    assert outcome.kind is OutcomeKind.OK, outcome
    fields = dict(kv.split("=") for kv in out.split()[-3:])
    share = int(fields["usage"]) / int(fields["wall"])
    throttled = int(fields["throttled"])
    print(f"CPU hog with --cpus 0.5 used {share:.3f} cores, throttled in {throttled} periods")
    assert share <= 0.5 * 1.1
    # Not vacuous on a busy machine (where the hog may get less than its quota anyway):
    # the kernel did hold it at the quota.
    assert throttled > 0
