"""Remove sandbox containers whose run is no longer alive.

A run is dead when its owner process on this host is gone (the worker was SIGKILLed,
the host rebooted) or when its deadline has passed by more than ``grace`` seconds,
whoever owns it. Only containers labelled ``askbox.sandbox`` are ever touched.
The periodic reaper also closes egress sockets of finished runs and removes egress
proxies left idle (``EgressProxies.reap_idle``), when it is given the proxies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import docker
from docker.errors import APIError, NotFound

from sandbox import labels, owner
from sandbox.egress import EgressProxies

log = logging.getLogger(__name__)


def reap(
    client: docker.DockerClient,
    deployment: str,
    grace: float = 60.0,
    is_alive: Callable[[dict[str, str]], bool | None] | None = None,
) -> list[str]:
    """Remove dead runs' containers; return their run ids.

    ``is_alive`` may add knowledge the sandbox lacks (e.g. "its job still exists"): it
    gets the container's labels and returns True/False, or None to fall back to the
    owner/deadline rules. Only the ``deployment``'s own sandboxes are looked at.
    """
    removed = []
    now = time.time()
    mine: dict[str, str | list[str] | bool] = {"label": f"{labels.SANDBOX}={deployment}"}
    # sparse: no inspect per container, which would race with runs removing their own.
    for container in client.containers.list(all=True, sparse=True, filters=mine):
        container_labels = container.attrs.get("Labels") or {}
        alive = is_alive(container_labels) if is_alive else None
        if alive is None:
            alive = owner.is_alive_here(container_labels.get(labels.OWNER, ""))
        deadline = float(container_labels.get(labels.DEADLINE, "0") or 0)
        if alive is False or now > deadline + grace:
            try:
                container.remove(force=True)
            except NotFound:
                continue
            except APIError as exc:
                log.error("reaper could not remove %s: %s", container.short_id, exc)
                continue
            run_id = container_labels.get(labels.RUN_ID, container.short_id)
            log.warning("reaped orphaned sandbox %s (owner %s)", run_id, container_labels.get(labels.OWNER))
            removed.append(run_id)
    return removed


def remove_deployment(client: docker.DockerClient, deployment: str) -> list[str]:
    """Remove every sandbox of ``deployment``, running or not (``askbox cleanup``, after its
    workers are stopped); return their run ids."""
    removed = []
    for container in client.containers.list(all=True, sparse=True, filters={"label": f"{labels.SANDBOX}={deployment}"}):
        try:
            container.remove(force=True)
        except NotFound:
            continue
        removed.append((container.attrs.get("Labels") or {}).get(labels.RUN_ID, container.short_id))
    return removed


def start_periodic(
    client: docker.DockerClient,
    every: float = 60.0,
    on_reaped: Callable[[list[str]], None] | None = None,
    egress: EgressProxies | None = None,
    egress_idle: float = 600.0,
    **kwargs,
) -> threading.Event:
    """Reap now and then every ``every`` seconds in a daemon thread; set the event to stop.

    With ``egress``, each pass also removes that socket root's proxies unused for
    ``egress_idle`` seconds (and the sockets of runs that are gone)."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                removed = reap(client, **kwargs)
                if removed and on_reaped:
                    on_reaped(removed)
                if egress is not None:
                    egress.reap_idle(client, idle=egress_idle)
            except Exception:  # a reaper that dies silently is worse than one that logs
                log.exception("reaper pass failed")
            if stop.wait(every):
                return

    threading.Thread(target=loop, name="askbox-reaper", daemon=True).start()
    return stop
