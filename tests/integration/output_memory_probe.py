"""Run a command printing a lot in the sandbox, discard its lines, and report our peak RSS growth.

Run as a separate process so the numbers are this run's alone: prints
``baseline_kb peak_kb lines truncated outcome``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sandbox import Sandbox, SandboxSpec
from sandbox.spec import Limits


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def main(image: str, script: str) -> None:
    sandbox = Sandbox(deployment=os.environ["ASKBOX_DEPLOYMENT"])  # the test session's
    sandbox.client.ping()  # connect first: the client's own memory is not the stream's
    warm = SandboxSpec(image=image, command=["true"])
    sandbox.run(warm).wait()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
    baseline = status_kb("VmRSS")
    count = 0
    with sandbox.run(SandboxSpec(image=image, command=["bash", "-c", script], limits=Limits(timeout=120))) as run:
        for _ in run:
            count += 1
    print(baseline, status_kb("VmHWM"), count, run.outcome.truncated_lines, run.outcome.kind.value)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
