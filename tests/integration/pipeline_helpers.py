"""Real Redis servers and real `askbox worker` processes for pipeline tests."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis

from jobs.queue import fetch

ROOT = Path(__file__).resolve().parents[2]
ASKBOX = str(Path(sys.executable).parent / "askbox")
REPO_STATE = Path(tempfile.gettempdir()) / f"askbox-test-repos-{os.getpid()}"
atexit.register(shutil.rmtree, REPO_STATE, ignore_errors=True)  # the session's workers are gone by then


# Ports for the servers tests start: below the kernel's ephemeral range (32768 and up, where
# bind(0) and outgoing connections take theirs) and below the egress proxies' (20000 and up),
# one block per test process. A port from bind(0) is free only until the next process asks:
# with tests in parallel, two of them were handed the same one before either listened.
_PORT_BLOCK = 2500
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 4
_ports = iter(range(10000 + _WORKER * _PORT_BLOCK + (os.getpid() % 500), 10000 + (_WORKER + 1) * _PORT_BLOCK))


def free_port() -> int:
    """A loopback port no other test process is handed, and free now."""
    for port in _ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (a server of a test before, or another program's)
            return port
    raise RuntimeError("this test process has used up its block of ports")


@dataclass
class RedisServer:
    """A redis-server of the test's own, with AOF, that can crash and come back."""

    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    extra: tuple[str, ...] = ()  # more redis-server options, e.g. ("--replicaof", "127.0.0.1", "6380")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
        )
        client = Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                served_by = client.info("server")["process_id"]
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            if served_by == self.proc.pid:
                return self
            # Another test session's server took the port between free_port() and ours
            # (which then failed to bind): never share it, its workers would take our jobs.
            self.proc.kill()
            self.proc.wait()
            if self.directory.joinpath("appendonlydir").exists() or self.extra:
                raise RuntimeError(f"port {self.port} is another process's Redis (pid {served_by})")
            self.port = free_port()
            return self.start()

    def crash(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@dataclass
class Sentinels:
    """``count`` redis-sentinel processes (``redis-server --sentinel``) of the test's own,
    watching ``primary`` as master ``name``, with fast failure detection (1 s)."""

    directory: Path
    primary: RedisServer
    name: str = "askbox"
    count: int = 3
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def addresses(self) -> str:
        """``ASKBOX_REDIS_SENTINELS``."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self, replicas: int = 1) -> Sentinels:
        for i in range(self.count):
            port = free_port()
            conf = self.directory / f"sentinel-{i}.conf"  # Sentinel rewrites it: its own, writable
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {self.name} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.name} 1000\n"
                f"sentinel failover-timeout {self.name} 10000\n"
                f"sentinel parallel-syncs {self.name} 1\n"
            )
            self.ports.append(port)
            self.procs.append(subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL))

        # Ready when every Sentinel knows the replicas and the other Sentinels: only then
        # can a quorum agree on a failover.
        def ready() -> bool:
            for port in self.ports:
                try:
                    state = Redis(port=port, socket_timeout=1).sentinel_master(self.name)
                except Exception:  # noqa: BLE001 - not up yet
                    return False
                if state["num-slaves"] < replicas or state["num-other-sentinels"] < self.count - 1:
                    return False
            return True

        wait_for(ready, 30, "the Sentinels to see the replicas and each other", every=0.2)
        return self

    def master_port(self) -> int | None:
        """The master's port as a majority of the Sentinels report it."""
        seen: dict[int, int] = {}
        for port in self.ports:
            try:
                _host, master = Redis(port=port, socket_timeout=1).sentinel_get_master_addr_by_name(self.name)
            except Exception:  # noqa: BLE001 - that Sentinel is busy or down
                continue
            seen[int(master)] = seen.get(int(master), 0) + 1
        agreed = [master for master, votes in seen.items() if votes > self.count // 2]
        return agreed[0] if agreed else None

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Workers:
    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    # Where the worker runs, e.g. Host.command (hosts_helpers.py): argv in, argv out.
    wrap: Callable[..., list[str]] | None = None

    def start(self, count: int = 1, burst: bool = False, log_dir: Path | None = None) -> list[subprocess.Popen]:
        started = []
        for _ in range(count):
            log = (log_dir or Path("/tmp")) / f"askbox-worker-{len(self.procs)}-{os.getpid()}.log"
            self.logs.append(log)
            argv = [ASKBOX, "worker", *(["--burst"] if burst else [])]
            proc = subprocess.Popen(
                self.wrap(*argv) if self.wrap else argv,
                env=self.env,
                cwd=ROOT,
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: SIGKILL reaches the work-horse too
            )
            self.procs.append(proc)
            started.append(proc)
        return started

    def kill(self, proc: subprocess.Popen) -> list[int]:
        """SIGKILL the worker and every process under it (RQ puts its work-horse in a
        session of its own, so the process group alone would miss it)."""
        victims = [proc.pid, *descendants(proc.pid)]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        return victims

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {log}\n" + "\n".join(log.read_text().splitlines()[-lines:]) for log in self.logs if log.exists()
        )


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str | Callable[[], str], every: float = 0.1
) -> object:
    """``predicate()``'s first true value within ``timeout`` s. ``what`` names it in the
    failure; a callable is called then, so logs in it are read at the timeout, not before."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")


def final_of(redis: Redis, job_id: str) -> dict | None:
    return fetch(redis, job_id).get_meta(refresh=True).get("final")


def wait_final(redis: Redis, job_id: str, timeout: float = 60, workers: Workers | None = None) -> dict:
    try:
        return wait_for(lambda: final_of(redis, job_id), timeout, f"the final message of {job_id}")  # type: ignore[return-value]
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{workers.tail() if workers else ''}") from None


def worker_env(redis_server: RedisServer, repo: Path, egress_root: Path, **extra: str) -> dict[str, str]:
    """The environment of `askbox worker` processes serving ``repo`` as "demo"."""
    return {
        **os.environ,
        "ASKBOX_REDIS_URL": redis_server.url,
        "ASKBOX_REPOS": f'{{"demo": "{repo}"}}',
        "ASKBOX_EGRESS_SOCKET_DIR": str(egress_root),
        # This session's own mirrors and snapshots, not the host's /var/lib/askbox.
        "ASKBOX_REPO_MIRRORS": str(REPO_STATE / "mirrors"),
        "ASKBOX_REPO_SNAPSHOTS": str(REPO_STATE / "snapshots"),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


class SocketRelay:
    """Relays every connection made to ``listener`` to a new one made by ``connect``, until
    closed. Written here because nothing on the host relays sockets (no socat)."""

    def __init__(self, listener: socket.socket, connect: Callable[[], socket.socket]) -> None:
        self._server, self._connect = listener, connect
        self._server.listen(64)
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            try:
                upstream = self._connect()
            except OSError:
                client.close()
                continue
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """No new or open connection works any more."""
        self._server.close()
        for sock in self._open:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class DockerSocketRelay(SocketRelay):
    """A Unix socket relayed to the Docker daemon's, that a test can take away: a daemon
    that was there when a worker started (its start checks pass) and is gone later."""

    def __init__(self, path: Path, daemon: str = "/var/run/docker.sock") -> None:
        self.path = path
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        super().__init__(listener, lambda: _unix(daemon))

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def close(self) -> None:
        super().close()
        self.path.unlink(missing_ok=True)


def _unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


class TcpRelay(SocketRelay):
    """``host:port`` relayed to a loopback port: a fake on 127.0.0.1 reached by containers
    at an address of the host on their network (the fakes only listen on loopback)."""

    def __init__(self, host: str, port: int, target: int) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # IP_FREEBIND: bind before the address exists (a compose network's gateway, which
        # `up` creates); connections are accepted once it does.
        listener.setsockopt(socket.SOL_IP, getattr(socket, "IP_FREEBIND", 15), 1)
        listener.bind((host, port))
        super().__init__(listener, lambda: socket.create_connection(("127.0.0.1", target)))
