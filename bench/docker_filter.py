"""What `askbox docker-filter` costs: a sandbox run and a bare API call, straight to the
daemon and through a real filter process, interleaved in the same run.

Prints p50/p95 of ``Sandbox.run()`` to the first output line (and the whole run) for
``echo hi`` with the full policy, and of ``GET /_ping`` and a container listing, each
direct and filtered, with the ratios. The filter's policy admits this machine's
askbox images and the deployment ``bench-filter``.
Usage: python bench/docker_filter.py [--runs N] [--calls N]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
from quick import parse_args  # noqa: E402  (bench/quick.py, beside this script)

from sandbox import images  # noqa: E402
from sandbox.runner import Sandbox  # noqa: E402
from sandbox.spec import SandboxSpec  # noqa: E402
from tests.integration.pipeline_helpers import ASKBOX, wait_for  # noqa: E402

DEPLOYMENT = "bench-filter"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p * (len(ordered) - 1))))]


def sandbox_run(box: Sandbox, image: str) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    with box.run(SandboxSpec(image=image, command=["echo", "hi"])) as run:
        for _ in run:
            first = first or time.perf_counter() - start
    assert run.outcome is not None and run.outcome.ok, run.outcome
    return first or float("nan"), time.perf_counter() - start


def timed(call) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def line(name: str, values: list[float]) -> float:
    p50 = statistics.median(values)
    print(f"{name:<44} p50 {p50 * 1000:7.2f} ms  p95 {pct(values, 0.95) * 1000:7.2f} ms")
    return p50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--calls", type=int, default=300)
    args = parse_args(parser, runs=2, calls=5)
    image = images.tag("sandbox")
    with tempfile.TemporaryDirectory(prefix="benchdf", dir="/tmp") as tmp:
        sock = Path(tmp) / "docker.sock"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASKBOX_")}
        env.update(
            ASKBOX_DOCKER_FILTER_SOCKET=str(sock),
            ASKBOX_DEPLOYMENT=DEPLOYMENT,
            ASKBOX_EGRESS_SOCKET_DIR=str(Path(tmp) / "egress"),
            ASKBOX_GATEWAY_SOCKET_DIR=str(Path(tmp) / "gw"),
        )
        proc = subprocess.Popen(
            [ASKBOX, "docker-filter"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for(sock.exists, 20, "the filter's socket")
            direct_client, filtered_client = docker.from_env(), docker.DockerClient(base_url=f"unix://{sock}")
            direct, filtered = (
                Sandbox(direct_client, deployment=DEPLOYMENT),
                Sandbox(filtered_client, deployment=DEPLOYMENT),
            )
            sandbox_run(direct, image), sandbox_run(filtered, image)  # warm caches
            runs: dict[str, list[tuple[float, float]]] = {"direct": [], "filtered": []}
            for _ in range(args.runs):  # interleaved so drift hits both alike
                runs["direct"].append(sandbox_run(direct, image))
                runs["filtered"].append(sandbox_run(filtered, image))
            mine = {"label": f"askbox.sandbox={DEPLOYMENT}"}
            calls: dict[str, list[float]] = {
                k: [] for k in ("ping direct", "ping filtered", "list direct", "list filtered")
            }
            for _ in range(args.calls):
                calls["ping direct"].append(timed(direct_client.ping))
                calls["ping filtered"].append(timed(filtered_client.ping))
                calls["list direct"].append(timed(lambda: direct_client.containers.list(all=True, filters=mine)))
                calls["list filtered"].append(timed(lambda: filtered_client.containers.list(all=True, filters=mine)))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    print(f"{args.runs} sandbox runs and {args.calls} calls each, image {image}")
    d = line("Sandbox.run first line, direct", [r[0] for r in runs["direct"]])
    f = line("Sandbox.run first line, through the filter", [r[0] for r in runs["filtered"]])
    dw = line("Sandbox.run whole run, direct", [r[1] for r in runs["direct"]])
    fw = line("Sandbox.run whole run, through the filter", [r[1] for r in runs["filtered"]])
    pd, pf = (
        line("GET /_ping, direct", calls["ping direct"]),
        line("GET /_ping, through the filter", calls["ping filtered"]),
    )
    ld, lf = (
        line("container list, direct", calls["list direct"]),
        line("container list, through the filter", calls["list filtered"]),
    )
    print(
        f"ratio filtered / direct: first line {f / d:.2f}x, whole run {fw / dw:.2f}x, "
        f"ping {pf / pd:.2f}x, list {lf / ld:.2f}x"
    )


if __name__ == "__main__":
    main()
