"""Repository snapshots: time from a question to the agent's first output, snapshot cached vs. made.

Generates a ~10,000-file repository (a working copy pushed to a local bare repository,
asked about as a ``file://`` remote) and, for each sample, runs what a question runs before
and around its agent: ``pin`` (the mirror, warm: no fetch), ``mount`` (the snapshot) and a
sandbox on it whose command prints the first file it finds in /workspace (the agent's
first output, without a model's latency on top). Compared in the same run:

- first snapshot: the repository's first, every file written (once);
- cached: the commit's snapshot exists (a second question on the same commit);
- created: a new commit was pushed and fetched, so its snapshot must be made (the files
  it shares with earlier commits hard-linked, the changed ones written);
- fetched+created: as created, with the mirror stale, so the question fetches first.

Then the disk use of the first snapshot (a full copy of the tree, minus the denylist), of each
further one (hard links to the files commits share) and of the mirror.
Usage: python bench/repos.py [--files 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quick import parse_args

from jobs.repos import RepoRef, mount, pin
from sandbox import Sandbox, SandboxSpec, images
from tests.integration.git_helpers import Upstream, git


def generate(up: Upstream, files: int) -> None:
    per_dir = 100
    for n in range(files):
        path = up.work / f"pkg{n // per_dir:03d}" / f"mod{n % per_dir:03d}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f'"""Module {n}."""\n\n' + "".join(f"def f{i}():\n    return {n * i}\n\n" for i in range(12)))
    (up.work / ".env").write_text("SECRET=x\n")
    git(up.work, "add", "-A")
    git(up.work, "commit", "-q", "-m", "generated")
    git(up.work, "push", "-q", str(up.bare), "main")


def first_output(
    sandbox: Sandbox, image: str, repo: RepoRef, mirrors: Path, snapshots: Path, refresh: float
) -> tuple[float, float]:
    """(seconds to the first line of output, of which preparing the snapshot)"""
    start = time.perf_counter()
    pinned = pin(repo, mirrors, refresh)
    with mount(pinned, snapshots) as workspace:
        prepared = time.perf_counter() - start
        spec = SandboxSpec(image=image, command=["sh", "-c", "ls /workspace | head -1"], repo=workspace.root)
        first = None
        with sandbox.run(spec) as run:
            for _ in run:
                first = first or time.perf_counter() - start
        assert run.outcome is not None and run.outcome.ok, run.outcome
    return first or float("nan"), prepared


def disk_use(*roots: Path) -> tuple[int, int, int]:
    """(bytes on disk, apparent bytes, files) under ``roots``, each inode once (snapshots
    hard-link the files they share), directories included."""
    seen: set[int] = set()
    blocks = size = count = 0
    for root in roots:
        for directory, dirs, names in os.walk(root):
            for name in [*names, *dirs]:
                st = os.lstat(os.path.join(directory, name))
                if st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
                blocks += st.st_blocks * 512
                size += st.st_size
                count += 0 if name in dirs else 1
    return blocks, size, count


def row(name: str, samples: list[tuple[float, float]]) -> float:
    firsts = [s[0] for s in samples]
    prepared = [s[1] for s in samples]
    p50 = statistics.median(firsts)
    print(
        f"{name:<18} first output p50 {p50 * 1000:8.1f} ms  (min {min(firsts) * 1000:7.1f}, "
        f"max {max(firsts) * 1000:7.1f})   of which pin+snapshot p50 {statistics.median(prepared) * 1000:7.1f} ms"
    )
    return p50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--image", default=images.tag("sandbox"))
    args = parse_args(parser, files=50, runs=1)
    with tempfile.TemporaryDirectory(prefix="askbox-bench-repos-") as tmp:
        measure(args, Path(tmp))


def measure(args: argparse.Namespace, root: Path) -> None:
    up = Upstream(root / "upstream")
    started = time.perf_counter()
    generate(up, args.files)
    print(f"generated {args.files:,} files in {time.perf_counter() - started:.1f} s under {root}")
    mirrors, snapshots = root / "mirrors", root / "snapshots"
    repo = RepoRef(name="bench", url=up.file_url)
    sandbox = Sandbox()
    sandbox.run(SandboxSpec(image=args.image, command=["true"])).wait()  # warm the image

    started = time.perf_counter()
    pin(repo, mirrors, refresh=0)
    print(f"first fetch into an empty mirror: {(time.perf_counter() - started) * 1000:.0f} ms")

    alone = first_output(sandbox, args.image, repo, mirrors, snapshots, refresh=3600)  # no file to share yet
    cached, created, fetched = [], [], []
    for n in range(args.runs):  # interleaved, so drift hits all alike
        first_output(sandbox, args.image, repo, mirrors, snapshots, refresh=3600)  # this commit's snapshot exists
        cached.append(first_output(sandbox, args.image, repo, mirrors, snapshots, refresh=3600))
        up.commit({"pkg000/mod000.py": f"# change {n}\n"}, f"change {n}")
        pin(repo, mirrors, refresh=0)  # fetched, not timed: the mirror is warm
        created.append(first_output(sandbox, args.image, repo, mirrors, snapshots, refresh=3600))
        up.commit({"pkg000/mod001.py": f"# change {n}\n"}, f"change {n}b")
        fetched.append(first_output(sandbox, args.image, repo, mirrors, snapshots, refresh=0))

    print(f"\n{args.files:,}-file repository, {args.runs} runs each, sandbox image {args.image}")
    row("first snapshot", [alone])
    base = row("cached snapshot", cached)
    new = row("snapshot created", created)
    both = row("fetched+created", fetched)
    print(f"ratio created/cached {new / base:.2f}x, fetched+created/cached {both / base:.2f}x")

    # Sealed snapshots (jobs/repos/snapshot.py): what sandboxes mount, one per commit.
    made = sorted(
        (p for p in (snapshots / "sealed" / repo.slug).iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
    )
    first_disk, content, count = disk_use(made[0])
    all_disk, _, _ = disk_use(*made)
    mirror_disk, _, _ = disk_use(mirrors)
    print(
        f"snapshot disk use: the first {first_disk / 2**20:.1f} MiB ({content / 2**20:.1f} MiB of content in "
        f"{count:,} files, 4 KiB blocks); each further commit {(all_disk - first_disk) / (len(made) - 1) / 2**20:.2f} "
        f"MiB (files hard-linked, {len(made)} snapshots {all_disk / 2**20:.1f} MiB in all); "
        f"mirror {mirror_disk / 2**20:.1f} MiB for all commits"
    )


if __name__ == "__main__":
    main()
