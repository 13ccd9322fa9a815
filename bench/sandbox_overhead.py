"""Sandbox start-up overhead: time from ``Sandbox.run()`` to the first line of output.

Compared, in the same run, with a bare ``docker run --rm IMAGE`` and a bare subprocess.
Usage: python bench/sandbox_overhead.py [--runs N] [--image IMAGE]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from quick import parse_args

from sandbox import Sandbox, SandboxSpec, images


def first_line_subprocess(argv: list[str]) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    first = time.perf_counter() - start
    proc.wait()
    return first, time.perf_counter() - start


def first_line_sandbox(sandbox: Sandbox, image: str) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    with sandbox.run(SandboxSpec(image=image, command=["echo", "hi"])) as run:
        for _ in run:
            first = first or time.perf_counter() - start
    assert run.outcome is not None and run.outcome.ok, run.outcome
    return first or float("nan"), time.perf_counter() - start


def summary(name: str, samples: list[tuple[float, float]]) -> tuple[float, float]:
    firsts = sorted(s[0] for s in samples)
    totals = sorted(s[1] for s in samples)
    p50, p95 = statistics.median(firsts), firsts[max(0, int(len(firsts) * 0.95) - 1)]
    print(
        f"{name:<34} first line p50 {p50 * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms   "
        f"whole run p50 {statistics.median(totals) * 1000:7.1f} ms"
    )
    return p50, p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--image", default=images.tag("sandbox"))
    args = parse_args(parser, runs=2)
    sandbox = Sandbox()
    sandbox.run(SandboxSpec(image=args.image, command=["true"])).wait()  # warm caches
    subprocess.run(["docker", "run", "--rm", args.image, "true"], check=True)

    bare, docker_run, ours = [], [], []
    for _ in range(args.runs):  # interleaved so drift hits all three alike
        bare.append(first_line_subprocess(["echo", "hi"]))
        docker_run.append(first_line_subprocess(["docker", "run", "--rm", args.image, "echo", "hi"]))
        ours.append(first_line_sandbox(sandbox, args.image))
    print(f"{args.runs} runs each, image {args.image}")
    b50, _ = summary("bare subprocess", bare)
    d50, d95 = summary("docker run --rm (CLI)", docker_run)
    o50, o95 = summary("askbox Sandbox.run (full policy)", ours)
    print(f"ratio askbox / docker run: p50 {o50 / d50:.2f}x  p95 {o95 / d95:.2f}x  (target <= 1.3x)")
    print(f"ratio askbox / subprocess: p50 {o50 / b50:.0f}x")


if __name__ == "__main__":
    main()
