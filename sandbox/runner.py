"""Start one container per run, stream its output line by line, classify how it ended."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from pydantic import BaseModel
from requests.exceptions import HTTPError, RequestException

from sandbox import labels, owner
from sandbox.allowlist import parse_allowlist
from sandbox.container_config import container_config, stdin_payload
from sandbox.egress import EgressProxies, close_run
from sandbox.errors import SandboxInfraError, docker_failed, docker_unreachable, image_missing
from sandbox.lines import LineSplitter, Tail
from sandbox.outcome import EXIT_KILLED, Outcome, OutcomeKind
from sandbox.spec import SandboxSpec

log = logging.getLogger(__name__)

# How long an interrupted start looks for the container of a create still in the daemon's
# hands (Sandbox._remove_run); the look ends as soon as that container is removed.
CREATE_IN_FLIGHT_GRACE = 10.0

# Whether Docker's event log answered this process (SandboxRun._killed_through_api).
_events_readable = True


def _raw_socket(sock: Any) -> socket.socket:
    # docker-py hands back the hijacked attach connection wrapped in a SocketIO, which has
    # no shutdown(); half-closing the socket (SHUT_WR) is how the daemon learns that stdin
    # ended (it then closes the container's stdin: StdinOnce), and no docker-py API does it.
    raw: socket.socket = getattr(sock, "_sock", sock)
    return raw


class OutputLine(BaseModel):
    stream: Literal["stdout", "stderr"]
    text: str
    truncated: bool = False


class Sandbox:
    """Runs specs in Docker. One instance can serve many runs, from many threads."""

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        egress: EgressProxies | None = None,
        deployment: str = "default",
    ) -> None:
        self._client = client
        self.egress = egress
        # The value of every run's askbox.sandbox label: deployments sharing a Docker host
        # (or test sessions) see, count and reap only their own sandboxes.
        self.deployment = deployment

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.from_env()
                self._client.ping()
            except (DockerException, RequestException) as exc:
                self._client = None
                raise docker_unreachable(exc) from exc
        return self._client

    def run(self, spec: SandboxSpec) -> SandboxRun:
        """Start the run now. Infrastructure faults do not raise: they become the outcome."""
        run = SandboxRun(spec)
        try:
            run._start(self.client, self._egress_dir(spec), self.deployment)
        except SandboxInfraError as exc:
            run._fail(str(exc))
        except (DockerException, RequestException) as exc:
            run._fail(str(docker_failed(exc)))
        except BaseException:
            # Interrupted while starting (SIGTERM/Ctrl-C in the CLI, bot/cli/signals.py): the
            # caller never gets the run to close, so remove what exists of it here, found
            # by its label in case the interruption came before Docker's answer.
            in_flight = run.create_sent and run.container is None
            self._remove_run(spec.run_id, appearing=CREATE_IN_FLIGHT_GRACE if in_flight else 0.0)
            raise
        return run

    def _remove_run(self, run_id: str, appearing: float) -> None:
        """Remove the run's container, found by its label.

        A create the caller stopped waiting for goes on in the daemon: its container may
        not be listed yet (look again for ``appearing`` seconds), or be listed but answer
        404 until the create is done (seen on a loaded host: look again for at least 2 s).
        """
        started = time.monotonic()
        removed = False
        try:
            while True:
                found = self.client.containers.list(
                    all=True, sparse=True, filters={"label": f"{labels.RUN_ID}={run_id}"}
                )
                pending = []
                for container in found:
                    try:
                        container.remove(force=True)
                        removed = True
                    except NotFound:
                        pending.append(container.id)  # still being created, or removed meanwhile
                waited = time.monotonic() - started
                if not pending and (removed or waited >= appearing):
                    return
                if pending and waited >= max(appearing, 2.0):
                    raise SandboxInfraError(f"still listed after {waited:.0f} s: {', '.join(map(str, pending))}")
                time.sleep(0.1)
        except (DockerException, RequestException, SandboxInfraError) as exc:
            log.error("could not remove the interrupted sandbox %s: %s (the reaper will)", run_id, exc)

    def _egress_dir(self, spec: SandboxSpec) -> Path | None:
        if not spec.egress_allow:
            return None
        if self.egress is None:
            raise SandboxInfraError("this sandbox has egress entries but no egress proxy configured")
        # A socket of this run's own: its connections are capped and logged under its id.
        return self.egress.ensure(self.client, parse_allowlist(spec.egress_allow), spec.run_id)

    def release_egress(self, spec: SandboxSpec) -> None:
        """After a one-off run (the CLI's): remove its allowlist's proxy unless another run
        uses it now, so no Squid outlives the command (a worker's reaper is not there)."""
        if not spec.egress_allow or self.egress is None:
            return
        try:
            self.egress.remove_unused(self.client, parse_allowlist(spec.egress_allow))
        except (DockerException, RequestException, SandboxInfraError) as exc:
            log.warning("could not remove the egress proxy of run %s: %s", spec.run_id, exc)

    def cancel(self, run_id: str) -> bool:
        """Kill a run from any thread or process; its owner reports it as cancelled."""
        found = self.client.containers.list(sparse=True, filters={"label": f"{labels.RUN_ID}={run_id}"})
        for container in found:
            try:
                container.kill()
            except (NotFound, APIError):
                pass
        return bool(found)


class SandboxRun:
    """One started container. Iterate it for output lines; ``outcome`` is set once it ends.

    Use it as a context manager (or call ``close()``): the container is removed in every
    outcome, including an exception in the caller's code.
    """

    def __init__(self, spec: SandboxSpec) -> None:
        self.spec = spec
        self.outcome: Outcome | None = None
        self.container: Container | None = None
        self._stream: Any = None
        self._stdin: socket.socket | None = None
        self._timer: threading.Timer | None = None
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._ending: OutcomeKind | None = None  # why *we* ended it, if we did
        self._drained = False  # the output stream reached its end
        self.create_sent = False  # the create request went out (its container may exist)
        self._created_at = time.time()  # wall clock, for Docker's event log
        self._egress_dir: Path | None = None  # this run's proxy socket directory, if any
        self._stderr = Tail(spec.caps.stderr_tail_bytes)
        self._splitters = {
            "stdout": LineSplitter(spec.caps.max_line_bytes),
            "stderr": LineSplitter(spec.caps.max_line_bytes),
        }

    # -- life cycle -------------------------------------------------------------------

    def _start(self, client: docker.DockerClient, egress_dir: Path | None, deployment: str) -> None:
        spec = self.spec
        self._egress_dir = egress_dir
        if spec.runtime and spec.runtime not in client.info().get("Runtimes", {}):
            raise SandboxInfraError(
                f"container runtime {spec.runtime!r} is not installed on the Docker host "
                "(install gVisor and register it in daemon.json, or unset ASKBOX_SANDBOX_RUNTIME)"
            )
        payload = stdin_payload(spec)
        config = container_config(
            spec,
            egress_dir=egress_dir,
            deployment=deployment,
            owner=owner.this_process(),
            deadline=time.time() + spec.limits.timeout,
        )
        try:
            self.create_sent = True
            container = self.container = client.containers.create(**config)
        except ImageNotFound as exc:
            raise image_missing(spec.image) from exc
        try:
            # Attach before start so not one byte of output is missed.
            cid = str(container.id)  # set on every container the daemon created
            self._stream = client.api.attach(cid, stdout=True, stderr=True, stream=True, logs=False, demux=True)
            if payload is not None:
                self._stdin = _raw_socket(client.api.attach_socket(cid, params={"stdin": 1, "stream": 1}))
            container.start()
        except BaseException:
            self._close_stdin()
            self._remove()
            raise
        if payload is not None:
            # A thread: a command that reads slowly (or never) must not hold up the run.
            threading.Thread(target=self._feed_stdin, args=(payload,), daemon=True).start()
        self._started = time.monotonic()
        self._timer = threading.Timer(spec.limits.timeout, self._end, (OutcomeKind.TIMEOUT,))
        self._timer.daemon = True
        self._timer.start()

    def _feed_stdin(self, payload: bytes) -> None:
        assert self._stdin is not None
        try:
            self._stdin.sendall(payload)
            self._stdin.shutdown(socket.SHUT_WR)
        except OSError as exc:  # the command ended without reading it all, or we closed it
            log.debug("stdin of run %s: %s", self.spec.run_id, exc)

    def _close_stdin(self) -> None:
        if self._stdin is None:
            return
        try:
            self._stdin.shutdown(socket.SHUT_RDWR)  # wakes a writer blocked in sendall
        except OSError:
            pass
        self._stdin.close()

    def _fail(self, message: str) -> None:
        self.outcome = Outcome(kind=OutcomeKind.INFRA_ERROR, message=message)

    def __iter__(self) -> Iterator[OutputLine]:
        if self._stream is None:
            return
        try:
            for out, err in self._stream:
                for name, chunk in (("stdout", out), ("stderr", err)):
                    if chunk:
                        yield from self._lines(name, self._splitters[name].feed(chunk))
            for name, splitter in self._splitters.items():
                yield from self._lines(name, splitter.flush())
            self._drained = True
        except (DockerException, RequestException, OSError) as exc:
            if self._ending is None:
                log.warning("output stream of run %s broke: %s", self.spec.run_id, exc)
        finally:
            self.close()

    def _lines(self, name: str, pieces: Iterator[tuple[bytes, bool]]) -> Iterator[OutputLine]:
        for raw, truncated in pieces:
            text = raw.decode("utf-8", errors="replace")
            if name == "stderr":
                self._stderr.add(text)
            yield OutputLine(stream=name, text=text, truncated=truncated)

    def wait(self) -> Outcome:
        """Drain the remaining output (discarding it) and return the outcome."""
        for _ in self:
            pass
        self.close()
        assert self.outcome is not None
        return self.outcome

    def cancel(self) -> None:
        """Kill the run from any thread; it ends as ``cancelled``."""
        self._end(OutcomeKind.CANCELLED)

    def stop(self) -> None:
        """Kill the run because the caller has what it needs; it ends as ``ok``."""
        self._end(OutcomeKind.OK)

    def _end(self, why: OutcomeKind) -> None:
        with self._lock:
            if self._ending is not None or self.outcome is not None:
                return
            self._ending = why
        if self.container is not None:
            try:
                self.container.kill()
            except (NotFound, APIError):
                pass  # already gone or already stopped

    def close(self) -> None:
        """Make sure the container is gone and the outcome is known. Idempotent."""
        if self.outcome is not None or self.container is None:
            if self._timer:
                self._timer.cancel()
            return
        if self._timer:
            self._timer.cancel()
        if self._ending is None and not self._drained:
            # The caller stopped reading before the end: treat it like a cancel.
            self._end(OutcomeKind.CANCELLED)
        exit_code, oom, error = None, False, ""
        try:
            exit_code = self.container.wait(timeout=30)["StatusCode"]
            oom = self._oom_killed(exit_code)
        except (DockerException, RequestException) as exc:
            error = str(exc)
        finally:
            if self._stream is not None:
                self._stream.close()
            self._close_stdin()
            self._remove()
        self.outcome = self._classify(exit_code, oom, error)

    def _oom_killed(self, exit_code: int) -> bool:
        """Whether the kernel killed the run's main process for memory.

        Docker's OOM flag comes from an event that containerd's shim publishes apart from
        the exit, and on a loaded host it came seconds after the exit, or not before the
        container was gone. So a run ended by a SIGKILL that this process did not send is
        judged by who else could have sent it: a kill through Docker's API (another
        process's cancel, the reaper, ``docker kill``/``stop``/``rm -f``) is in Docker's
        event log; without one, it was the kernel's OOM killer (behind the Docker filter,
        which passes no event log, the flag alone decides). A child killed for memory
        while the main process carries on and exits 0 is the agent's business (its tool
        reported "Killed"), not the run's outcome, so the same run always ends the same way.
        """
        assert self.container is not None
        if exit_code == 0:
            return False
        self.container.reload()
        if self.container.attrs["State"].get("OOMKilled"):
            return True
        return exit_code == EXIT_KILLED and self._ending is None and self._killed_through_api() is False

    def _killed_through_api(self) -> bool | None:
        """Whether Docker's event log has a kill of this container sent through its API.

        The kill is logged as it is sent, before the daemon sees the exit, so the log up to
        now is enough. None where it cannot be read (the Docker filter passes no
        ``/events``: a compromised worker would learn of every container); then only
        Docker's OOM flag tells, as it did before. Asked once per process.
        """
        global _events_readable
        assert self.container is not None and self.container.client is not None
        if not _events_readable:
            return None
        try:
            # docker-py's events() reads the answer without looking at its status (a refusal
            # would read as "no events"), and takes whole seconds only (the log would end up
            # to a second early): the plain request, through the same client, with both.
            api = self.container.client.api  # a requests.Session on Docker's socket
            response = api.get(
                f"{api.base_url}/v{api.api_version}/events",
                timeout=30,
                params={
                    "since": f"{self._created_at - 1:.0f}",
                    "until": f"{time.time():.9f}",
                    "filters": json.dumps({"container": [self.container.id], "event": ["kill"]}),
                },
            )
            response.raise_for_status()
            return any(line.strip() for line in response.text.splitlines())
        except (DockerException, RequestException) as exc:
            if isinstance(exc, HTTPError):  # refused (by the filter): not asked again
                _events_readable = False
            log.info("Docker's event log is not readable here (%s): only Docker's OOM flag tells an OOM kill", exc)
            return None

    def __enter__(self) -> SandboxRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _remove(self) -> None:
        container = self.container
        try:
            if container is not None:
                container.remove(force=True)
        except NotFound:
            pass
        except (DockerException, RequestException) as exc:
            log.error(
                "could not remove sandbox container %s: %s (the reaper will)",
                container.id if container is not None else "?",
                exc,
            )
        if self._egress_dir is not None:
            # The run's own proxy socket goes with it: a proxy without run directories is
            # unused (EgressProxies.remove_unused), and its listener stops within 2 s.
            close_run(self._egress_dir)

    def _classify(self, exit_code: int | None, oom: bool, error: str) -> Outcome:
        duration = time.monotonic() - self._started

        def outcome(kind: OutcomeKind, message: str = "", stopped_early: bool = False) -> Outcome:
            return Outcome(
                kind=kind,
                message=message,
                stopped_early=stopped_early,
                exit_code=exit_code,
                stderr_tail=self._stderr.text(),
                duration=round(duration, 3),
                truncated_lines=sum(s.truncated for s in self._splitters.values()),
            )

        limits = self.spec.limits
        if error and exit_code is None:
            return outcome(OutcomeKind.INFRA_ERROR, f"lost the container: {error}")
        if self._ending is OutcomeKind.TIMEOUT:
            return outcome(OutcomeKind.TIMEOUT, f"deadline {limits.timeout:g} s")
        if oom:
            return outcome(OutcomeKind.OOM, f"memory limit {limits.memory // 2**20} MiB")
        if self._ending is OutcomeKind.CANCELLED:
            return outcome(OutcomeKind.CANCELLED)
        if self._ending is OutcomeKind.OK:
            return outcome(OutcomeKind.OK, stopped_early=True)
        if exit_code == 0:
            return outcome(OutcomeKind.OK)
        if exit_code == EXIT_KILLED:
            return outcome(OutcomeKind.CANCELLED, "killed from outside")
        return outcome(OutcomeKind.EXIT_ERROR)
