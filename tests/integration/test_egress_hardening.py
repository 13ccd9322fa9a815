"""Attacks on the egress proxy from inside a sandbox, each of which must fail.

- one sandbox holding 500 connections must not cut a second sandbox off (own sockets);
- allowlisted names (exact or wildcard) that resolve to loopback or to the host's own
  address are refused, by CONNECT and by plain GET; IP literals never cause a PTR query;
- a changed proxy configuration takes effect on the next run; idle proxies are reaped;
- ``sandbox.egress.self_test`` passes through the real proxy and fails clearly otherwise.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.server
import multiprocessing
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import OutcomeKind, SandboxSpec
from sandbox.allowlist import parse_allowlist
from sandbox.egress import EgressProxies, self_test
from sandbox.errors import SandboxInfraError
from sandbox.runner import Sandbox
from sandbox.spec import Limits
from tests.conftest import DEPLOYMENT
from tests.integration.test_egress import _Hello, local_server  # noqa: F401 - a fixture

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leftovers")]


class _DualStack(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 as well
        super().server_bind()


@pytest.fixture()
def any_address_server() -> Iterator[int]:
    """Listens on every local address (v4 and v6): reachable as loopback and as the host's own."""
    server = _DualStack(("::", 0), _Hello)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def host_address() -> str:
    return subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=True).stdout.split()[0]


def run_lines(sandbox: Sandbox, spec: SandboxSpec) -> tuple[list[str], object]:
    with sandbox.run(spec) as run:
        lines = [line.text for line in run if line.stream == "stdout"]
    return lines, run.outcome


@pytest.fixture()
def own_proxies(docker_client, built_images, tmp_path) -> Iterator[callable]:
    """EgressProxies on a socket root of this test's own (so reaping here touches nothing
    else), made with whatever options the test passes; all removed afterwards."""
    root = tmp_path / "egress"
    root.mkdir(mode=0o755)
    made: list[EgressProxies] = []

    def make(**options) -> Sandbox:
        proxies = EgressProxies(built_images["egress-proxy"], root, **options)
        made.append(proxies)
        return Sandbox(docker_client, proxies, deployment=DEPLOYMENT)

    yield make
    for proxies in made:
        proxies.stop_all(docker_client)


# --- 1. one sandbox cannot starve another ---------------------------------------------

HOLD = """
n=0
for i in $(seq 500); do
  exec {fd}<>/dev/tcp/127.0.0.1/3128 && n=$((n+1))
done
echo "HOLDING $n"
sleep 120
"""


def test_500_idle_connections_do_not_cut_off_another_sandbox(sandbox, sandbox_image, local_server, docker_client):  # noqa: F811 - the fixture
    allow = (f"127.0.0.1:{local_server}",)
    hog = SandboxSpec(
        image=sandbox_image,
        command=["bash", "-c", HOLD],
        egress_allow=allow,
        limits=Limits(timeout=150, pids=2048, nofile=4096),
    )
    holding = threading.Event()
    seen: list[str] = []
    with sandbox.run(hog) as hog_run:

        def read() -> None:
            for line in hog_run:
                seen.append(line.text)
                if line.text.startswith("HOLDING"):
                    holding.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert holding.wait(90), f"the hog never held its connections: {seen} {hog_run.outcome}"
        assert "HOLDING 500" in seen  # every one of them was accepted by its bridge
        victim = SandboxSpec(
            image=sandbox_image,
            command=["bash", "-c", f"curl -sS -m 10 http://127.0.0.1:{local_server}/"],
            egress_allow=allow,
            limits=Limits(timeout=60),
        )
        lines, outcome = run_lines(sandbox, victim)
        hog_run.cancel()
    reader.join(30)
    assert outcome.kind is OutcomeKind.OK, outcome
    assert "hello from the allowlisted server" in lines
    # Every decision names its run: the victim's request is logged under its own id.
    mine = sandbox.egress.decisions(docker_client, parse_allowlist(allow), run_id=victim.run_id)
    assert any(f"TCP_MISS/200 GET http://127.0.0.1:{local_server}/" in line for line in mine), mine


# --- 2. names resolving into the host are refused; no PTR lookups ----------------------


class DnsRecorder:
    """A UDP DNS server on a loopback address of this test's own that answers NXDOMAIN to
    everything and records each question's name and type. Hand-written (the DNS wire
    format's header and question only) because no DNS library is a dependency here."""

    def __init__(self, address: str = "127.0.0.153") -> None:
        self.address = address
        self.questions: list[tuple[str, int]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 53))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                packet, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            if peer is None:  # shut down (close() below)
                return
            name, offset = [], 12
            while offset < len(packet) and packet[offset]:
                length = packet[offset]
                name.append(packet[offset + 1 : offset + 1 + length].decode(errors="replace"))
                offset += 1 + length
            qtype = struct.unpack("!H", packet[offset + 1 : offset + 3])[0] if offset + 3 <= len(packet) else 0
            self.questions.append((".".join(name), qtype))
            flags = 0x8183  # response, recursion desired+available, NXDOMAIN
            reply = packet[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + packet[12 : offset + 5]
            self.sock.sendto(reply, peer)

    def close(self) -> None:
        # shutdown() first: it wakes the thread blocked in recvfrom. A bare close() would
        # leave the kernel socket (and port 53 on this address) held by that blocked call,
        # and the next test's recorder could not bind.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture()
def dns_recorder() -> Iterator[DnsRecorder]:
    recorder = DnsRecorder()
    yield recorder
    recorder.close()


def test_names_resolving_into_the_host_are_refused_and_literals_never_reverse_resolved(
    own_proxies, sandbox_image, any_address_server, dns_recorder, docker_client
):
    port = any_address_server
    me = host_address()
    hosts = {"loop.askbox.test": "127.0.0.1", "self.askbox.test": me, "x.wild.askbox.test": "127.0.0.1"}
    sandbox = own_proxies(extra_hosts=hosts, dns_nameservers=(dns_recorder.address,))
    allow = (f"loop.askbox.test:{port}", f"self.askbox.test:{port}", f"*.wild.askbox.test:{port}", f"localhost:{port}")
    names = ["loop.askbox.test", "self.askbox.test", "x.wild.askbox.test"]
    probes = [f'echo "control $(curl -s -m 5 http://localhost:{port}/)"']  # named as loopback: allowed
    for name in names:
        probes.append(f'echo "GET {name} $(curl -s -m 5 -o /dev/null -w %{{http_code}} http://{name}:{port}/)"')
        probes.append(f'echo "CONNECT {name} $(curl -s -m 5 -o /dev/null -w %{{http_code}} https://{name}:{port}/)"')
    # A wildcard name only the test's DNS server could answer: proves Squid asks it at all.
    probes.append(f"curl -s -m 5 -o /dev/null http://unknown.wild.askbox.test:{port}/")
    # IP literals the allowlist does not name: without -n Squid would reverse-resolve them.
    for literal in ("127.0.0.9", "127.1.2.3"):
        probes.append(
            f'echo "literal {literal} $(curl -s -m 5 -o /dev/null -w %{{http_code}} http://{literal}:{port}/)"'
        )
    spec = SandboxSpec(
        image=sandbox_image, command=["bash", "-c", "; ".join(probes)], egress_allow=allow, limits=Limits(timeout=90)
    )
    lines, outcome = run_lines(sandbox, spec)
    assert outcome.kind is OutcomeKind.OK, outcome
    assert "control hello from the allowlisted server" in lines, [
        line for line in lines if "ERR_" in line or "control" in line
    ][:5]  # reachable all along
    for name in names:
        assert f"GET {name} 403" in lines, lines
        assert f"CONNECT {name} 000" in lines, lines  # no tunnel
    log = "\n".join(sandbox.egress.decisions(docker_client, parse_allowlist(allow), run_id=spec.run_id))
    for name in names:
        assert f"TCP_DENIED/403 GET http://{name}:{port}/" in log
        assert f"TCP_DENIED/403 CONNECT {name}:{port}" in log
    assert "literal 127.0.0.9 403" in lines and "literal 127.1.2.3 403" in lines
    asked = dns_recorder.questions
    assert any(name == "unknown.wild.askbox.test" for name, _ in asked), asked  # Squid uses this resolver
    assert [q for q in asked if q[1] == 12 or q[0].endswith("in-addr.arpa") or q[0].endswith("ip6.arpa")] == []


# --- 3. a changed configuration takes effect; idle proxies go --------------------------


def proxy_names(sandbox: Sandbox, client) -> set[str]:
    return {c.attrs["Names"][0].lstrip("/") for c in sandbox.egress._mine(client)}


TWO_IDLE_THEN_GET = """
exec 3<>/dev/tcp/127.0.0.1/3128; exec 4<>/dev/tcp/127.0.0.1/3128; sleep 1
echo "third $(curl -s -m 4 -o /dev/null -w %{{http_code}} http://127.0.0.1:{port}/)"
"""


def test_changed_config_takes_effect_on_the_next_run_and_idle_proxies_are_reaped(
    own_proxies,
    sandbox_image,
    local_server,  # noqa: F811 - the fixture imported above
    docker_client,
):
    allow = (f"127.0.0.1:{local_server}",)
    spec = lambda: SandboxSpec(  # noqa: E731 - a fresh run id each time
        image=sandbox_image,
        command=["bash", "-c", TWO_IDLE_THEN_GET.format(port=local_server)],
        egress_allow=allow,
        limits=Limits(timeout=60),
    )
    roomy = own_proxies(max_connections=64)
    lines, outcome = run_lines(roomy, spec())
    assert outcome.kind is OutcomeKind.OK and "third 200" in lines, (lines, outcome)
    before = proxy_names(roomy, docker_client)
    # The same allowlist, a changed configuration (one run may now hold 2 connections):
    # the running proxy must not be reused.
    tight = own_proxies(max_connections=2)
    lines, outcome = run_lines(tight, spec())
    assert outcome.kind is OutcomeKind.OK and "third 000" in lines, (lines, outcome)
    after = proxy_names(tight, docker_client)
    assert len(before) == 1 and before < after and len(after) == 2

    # A proxy with a live sandbox on it stays, even when idle time is zero ...
    sleeper = SandboxSpec(image=sandbox_image, command=["sleep", "60"], egress_allow=allow, limits=Limits(timeout=90))
    with tight.run(sleeper) as run:
        time.sleep(0.5)
        removed = tight.egress.reap_idle(docker_client, idle=0, grace=0)
        left = proxy_names(tight, docker_client)
        run.cancel()
    assert before <= set(removed) and len(left) == 1 and left < after, (removed, left)
    # The run's own socket directory went with its sandbox (issue 13: it used to wait for the reaper).
    assert list(Path(tight.egress.socket_root).glob("*/runs/run-*")) == []
    # ... and goes once nothing uses it, with its sockets' directories.
    assert set(tight.egress.reap_idle(docker_client, idle=0, grace=0)) == left
    assert tight.egress._mine(docker_client) == []
    assert list(Path(tight.egress.socket_root).iterdir()) == []


def _ensure_from_another_process(image: str, root: str, allow: str, run_id: str, start_at: float) -> str:
    """One worker process's first question: open a run on the proxy (starting it if need be)."""
    import docker  # in the child

    proxies = EgressProxies(image, Path(root))
    time.sleep(max(0.0, start_at - time.time()))  # all processes at once
    try:
        return str(proxies.ensure(docker.from_env(), parse_allowlist(allow), run_id))
    except Exception as exc:  # noqa: BLE001 - reported back to the test as text
        return f"{type(exc).__name__}: {exc}"


def _remove_unused_from_another_process(image: str, root: str, until: float) -> int:
    """A worker stopping meanwhile: remove_unused as often as it can."""
    import docker

    proxies, client, removed = EgressProxies(image, Path(root)), docker.from_env(), 0
    while time.time() < until:
        removed += len(proxies.remove_unused(client))
    return removed


def test_workers_starting_one_proxy_at_once_all_get_it(docker_client, built_images, tmp_path):
    """Four processes' first runs on one allowlist, with no proxy yet, while another process
    keeps removing unused proxies: every run gets its socket on one running proxy. (CI saw
    the race this closes: one worker removed another's just-created proxy as broken.)"""
    root = tmp_path / "egress"
    root.mkdir(mode=0o755)
    image, allow = built_images["egress-proxy"], "localhost:9"
    proxies = EgressProxies(image, root)
    context = multiprocessing.get_context("spawn")  # real, separate processes, as workers are
    try:
        with concurrent.futures.ProcessPoolExecutor(5, mp_context=context) as pool:
            for round_ in range(3):
                start_at = time.time() + 3.0  # the pool's processes are spawned by then
                remover = pool.submit(_remove_unused_from_another_process, image, str(root), start_at + 8.0)
                runs = [
                    pool.submit(_ensure_from_another_process, image, str(root), allow, f"r{round_}-{i}", start_at)
                    for i in range(4)
                ]
                results = [run.result(timeout=120) for run in runs]
                remover.result(timeout=120)
                assert all(Path(result).is_dir() for result in results), results
                running = [c for c in proxies._mine(docker_client) if c.status == "running"]
                assert len(running) == 1, [(c.name, c.status) for c in proxies._mine(docker_client)]
                for result in results:
                    proxies.close_run(Path(result))
                assert proxies.remove_unused(docker_client) == [running[0].attrs["Names"][0].lstrip("/")]
                assert list(root.iterdir()) == []  # its directory and its lock went with it
    finally:
        proxies.stop_all(docker_client)


# --- 4. the self-test -----------------------------------------------------------------


def test_self_test_passes_through_the_real_proxy(sandbox, sandbox_image):
    self_test(sandbox, sandbox_image)


def test_self_test_fails_clearly_when_the_sandbox_cannot_reach_the_proxy(sandbox, built_images):
    # The egress image has no curl: nothing allowed is reached, and the message says so.
    with pytest.raises(
        SandboxInfraError, match=r"egress self-test: an allowed local name \(localhost:\d+\) was not reached"
    ):
        self_test(sandbox, built_images["egress-proxy"])


def test_self_test_fails_clearly_without_the_proxy_image(docker_client, sandbox_image, tmp_path):
    broken = Sandbox(
        docker_client, EgressProxies("askbox/egress-proxy:does-not-exist", tmp_path), deployment=DEPLOYMENT
    )
    with pytest.raises(SandboxInfraError, match="does-not-exist"):
        self_test(broken, sandbox_image)


# --- 5. a name that does not resolve is not the egress policy (issue 13) -------------------


def test_a_name_that_does_not_resolve_reads_unlike_a_refused_one(own_proxies, sandbox_image, dns_recorder):
    """What a client prints through the real proxy for an allowlisted name that does not
    resolve (the test's DNS server answers NXDOMAIN) and for a name off the list: the first
    is named a DNS failure, the second the egress policy."""
    from sandbox.agents.events import ErrorKind
    from sandbox.agents.failures import EGRESS_BLOCKED_MESSAGE, network_failure, unreachable_message

    sandbox = own_proxies(dns_nameservers=(dns_recorder.address,))
    script = (
        "curl -sS -m 20 -o /dev/null https://api.nxdomain.askbox.test/ 2>&1 | sed 's/^/unresolved: /'; "
        "curl -sS -m 20 -o /dev/null https://off-the-list.askbox.test/ 2>&1 | sed 's/^/refused: /'"
    )
    spec = SandboxSpec(
        image=sandbox_image,
        command=["sh", "-c", script],
        egress_allow=("api.nxdomain.askbox.test",),
        limits=Limits(timeout=90),
    )
    lines, outcome = run_lines(sandbox, spec)
    assert outcome.kind is OutcomeKind.OK, outcome
    unresolved = next(line for line in lines if line.startswith("unresolved: "))
    refused = next(line for line in lines if line.startswith("refused: "))
    assert network_failure(unresolved) is ErrorKind.UNREACHABLE, unresolved
    assert "could not connect" in unreachable_message(unresolved) and "egress policy" not in unresolved
    assert network_failure(refused) is ErrorKind.EGRESS_BLOCKED, refused
    assert EGRESS_BLOCKED_MESSAGE.startswith("LLM endpoint not reachable (blocked by egress policy)")
    assert any(name == "api.nxdomain.askbox.test" for name, _ in dns_recorder.questions)  # it was asked
