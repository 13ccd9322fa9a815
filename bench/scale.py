"""How far one host goes: memory and CPU per sandbox for the Gemini CLI, and questions per
minute with 1, 2, 4 ... workers (ratio against 1 worker, measured in the same run).

Real `askbox worker` processes and a real `askbox gateway`, the real Gemini CLI in the
agent-gemini image, its own Redis; the model is the fake Gemini API (tests/fakes), which
answers each question with one tool call (read README.md) and then an answer streamed
over ``--model-seconds``. While questions run, every sandbox's cgroup is sampled
(memory usage and its peak, CPU time), and the egress proxy's too.

Needs Docker and the images (`askbox images build --offline`), cgroup v1 or v2 with the
cgroupfs driver. Usage: python bench/scale.py [--questions N] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ASKBOX_DEPLOYMENT", f"bench-scale-{uuid.uuid4().hex[:6]}")

import docker  # noqa: E402
from proxies import stop_proxies  # noqa: E402  (bench/proxies.py, beside this script)
from quick import parse_args  # noqa: E402  (bench/quick.py, beside this script)
from redis import Redis  # noqa: E402
from rq import Worker  # noqa: E402
from rq.serializers import JSONSerializer  # noqa: E402

from jobs import queue as jobs_queue  # noqa: E402
from jobs.question import Origin, Question  # noqa: E402
from jobs.settings import JobSettings  # noqa: E402
from sandbox import images, labels  # noqa: E402
from tests.fakes.gemini_api import FakeGeminiAPI, FunctionCall, RecordedRequest, Text  # noqa: E402
from tests.integration.gateway_helpers import GatewayProcess, gateway_env  # noqa: E402
from tests.integration.pipeline_helpers import RedisServer, Workers, wait_for  # noqa: E402

DEPLOYMENT = os.environ["ASKBOX_DEPLOYMENT"]
KEY = "AIzaSy-bench-scale-key-0123456789"
ANSWER = "The repository is a small demo: README.md describes it and src/app.py holds answer(), which returns 42. " * 6


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p * (len(ordered) - 1))))]


def cgroup_files(container_id: str) -> tuple[Path, Path, Path] | None:
    """(memory usage, memory peak, CPU nanoseconds) of a container, cgroup v1 or v2."""
    v1 = Path("/sys/fs/cgroup/memory/docker") / container_id
    if v1.is_dir():
        return (
            v1 / "memory.usage_in_bytes",
            v1 / "memory.max_usage_in_bytes",
            Path("/sys/fs/cgroup/cpuacct/docker") / container_id / "cpuacct.usage",
        )
    v2 = Path("/sys/fs/cgroup/docker") / container_id
    if v2.is_dir():
        return v2 / "memory.current", v2 / "memory.peak", v2 / "cpu.stat"
    return None


def read_cpu_ns(path: Path) -> int:
    text = path.read_text()
    if path.name == "cpu.stat":  # v2: usage_usec
        return int(next(line.split()[1] for line in text.splitlines() if line.startswith("usage_usec"))) * 1000
    return int(text)


@dataclass
class Seen:
    kind: str  # "sandbox" | "egress"
    first: float
    last: float
    peak_bytes: int = 0
    cpu_ns: int = 0


class Sampler:
    """Samples every askbox container of this deployment (and its egress proxy) every
    ``every`` seconds from its cgroup files: no Docker stats stream per container."""

    def __init__(self, client: docker.DockerClient, every: float = 0.2) -> None:
        self.client, self.every = client, every
        self.seen: dict[str, Seen] = {}
        self.running: list[int] = []  # sandboxes running at each sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                sandboxes = self.client.containers.list(
                    sparse=True, filters={"label": f"{labels.SANDBOX}={DEPLOYMENT}"}
                )
                proxies = self.client.containers.list(sparse=True, filters={"label": labels.EGRESS})
            except docker.errors.APIError:
                continue
            self.running.append(len(sandboxes))
            now = time.monotonic()
            for kind, containers in (("sandbox", sandboxes), ("egress", proxies)):
                for container in containers:
                    files = cgroup_files(container.id)
                    if files is None:
                        continue
                    try:
                        usage, peak, cpu = int(files[0].read_text()), int(files[1].read_text()), read_cpu_ns(files[2])
                    except (OSError, ValueError, StopIteration):
                        continue  # the run ended between the list and the read
                    seen = self.seen.setdefault(container.id, Seen(kind, now, now))
                    seen.last, seen.peak_bytes = now, max(seen.peak_bytes, usage, peak)
                    seen.cpu_ns = max(seen.cpu_ns, cpu)


def model(seconds: float):  # type: ignore[no-untyped-def]
    """The fake model: first a tool call, then the answer streamed over ``seconds``."""

    def turn(request: RecordedRequest):  # type: ignore[no-untyped-def]
        if request.action != "streamGenerateContent":
            return Text("OK")  # the CLI's own side calls (next-speaker check and the like)
        if not request.all_function_responses():
            return FunctionCall("read_file", {"file_path": "README.md"})
        return Text(ANSWER, chunks=5, delay=seconds / 4)

    return turn


def run_questions(redis: Redis, settings: JobSettings, n: int, tag: str) -> tuple[float, list[float]]:
    """Enqueue ``n`` questions at once (distinct users: the per-user cap is not measured);
    returns the wall time until the last final, and each one's enqueue-to-final time."""
    start = time.monotonic()
    jobs = []
    for i in range(n):
        q = Question(
            origin=Origin(kind="terminal", user=f"{tag}-{i}"),
            text=f"what is this repo? ({tag} {i})",
            repo="demo",
            agent="gemini",
            fresh=True,
        )
        jobs.append(jobs_queue.enqueue(redis, q, settings).job)
    done: dict[str, float] = {}
    while len(done) < n:
        for job in jobs:
            if job.id not in done:
                final = job.get_meta(refresh=True).get("final")
                if final:
                    if final.get("kind") != "answer":
                        raise SystemExit(f"{job.id} ended with {final.get('kind')}: {final.get('text', '')[:300]}")
                    done[job.id] = time.monotonic() - start
        if time.monotonic() - start > 60 * n:
            raise SystemExit("questions did not finish in time")
        time.sleep(0.1)
    return time.monotonic() - start, list(done.values())


def proc_cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes and of their waited-for children (the work-horses)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=12, help="questions per throughput run")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure, the first is the baseline")
    parser.add_argument("--model-seconds", type=float, default=2.0, help="the fake model's streaming time per answer")
    args = parse_args(parser, questions=2, workers="1,2", model_seconds=0.2)
    counts = [int(c) for c in args.workers.split(",")]
    client = docker.from_env()
    print(
        f"host: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB; "
        f"agent image {images.tag('agent-gemini')}; fake model {args.model_seconds:.1f} s per answer, "
        f"{args.questions} questions per run"
    )
    with tempfile.TemporaryDirectory() as tmp, FakeGeminiAPI(default=model(args.model_seconds)) as api:
        tmp_path = Path(tmp)
        repo = tmp_path / "repo"
        (repo / "src").mkdir(parents=True)
        (repo / "README.md").write_text("# demo repo\n")
        (repo / "src" / "app.py").write_text("def answer():\n    return 42\n")
        egress = tmp_path / "egress"
        egress.mkdir()
        egress.chmod(0o755)
        (tmp_path / "redis").mkdir()
        server = RedisServer(tmp_path / "redis").start()
        redis = Redis.from_url(server.url)
        settings = JobSettings(repos={"demo": repo}, max_waiting=10_000)
        gateway = GatewayProcess(gateway_env(api.base_url, [KEY], server.url)).start()
        env = {
            **os.environ,
            "ASKBOX_REDIS_URL": server.url,
            "ASKBOX_AGENT": "gemini",
            "ASKBOX_GATEWAY_SOCKET_DIR": str(gateway.socket_dir),
            "ASKBOX_REPOS": f'{{"demo": "{repo}"}}',
            "ASKBOX_EGRESS_SOCKET_DIR": str(egress),
            "PYTHONUNBUFFERED": "1",
        }
        workers = Workers(env)
        rows = []
        try:
            with Sampler(client) as sampler:
                for count in counts:
                    procs = workers.start(count, log_dir=tmp_path)
                    wait_for(
                        lambda c=count: len(Worker.all(connection=redis, serializer=JSONSerializer)) >= c,
                        120,
                        "workers",
                    )
                    run_questions(redis, settings, count, f"warm{count}")  # egress proxy, page cache
                    before = proc_cpu_seconds([p.pid for p in procs] + [gateway.proc.pid])
                    seen_before = set(sampler.seen)
                    wall, each = run_questions(redis, settings, args.questions, f"run{count}")
                    host_cpu = proc_cpu_seconds([p.pid for p in procs] + [gateway.proc.pid]) - before
                    runs = [s for cid, s in sampler.seen.items() if cid not in seen_before and s.kind == "sandbox"]
                    rows.append((count, args.questions / wall * 60, each, runs, host_cpu))
                    workers.stop()
                    workers.procs.clear()
                    redis.delete(*redis.keys("rq:worker:*") or ["-"])
            proxies = [s for s in sampler.seen.values() if s.kind == "egress"]
        finally:
            workers.stop()
            gateway.stop()
            server.stop()
            stop_proxies(client, egress)
    base = rows[0][1]
    print(
        "\nworkers | questions/min | vs 1st | enqueue->final p50 / p95 | sandbox peak MiB p50 / max "
        "| sandbox CPU s/question | sandbox cores while running | worker+gateway CPU s/question"
    )
    for count, qpm, each, runs, host_cpu in rows:
        peaks = [r.peak_bytes / 2**20 for r in runs] or [0.0]
        cpu = [r.cpu_ns / 1e9 for r in runs] or [0.0]
        cores = [r.cpu_ns / 1e9 / max(r.last - r.first, 0.2) for r in runs] or [0.0]
        print(
            f"{count:7d} | {qpm:13.1f} | {qpm / base:5.2f}x | {statistics.median(each):8.1f} s / {pct(each, 0.95):5.1f} s "
            f"| {statistics.median(peaks):7.0f} / {max(peaks):5.0f} | {statistics.median(cpu):22.2f} "
            f"| {statistics.median(cores):27.2f} | {host_cpu / args.questions:.2f}"
        )
    if proxies:
        print(
            f"egress proxy (one per allowlist, shared by the host's sandboxes): peak "
            f"{max(p.peak_bytes for p in proxies) / 2**20:.0f} MiB"
        )
    print(f"sandboxes running at once: max {max(sampler.running or [0])}")
    all_peaks = [r.peak_bytes / 2**20 for row in rows for r in row[3]]
    all_cpu = [r.cpu_ns / 1e9 for row in rows for r in row[3]]
    if all_peaks:
        print(
            f"per sandbox over all runs: memory peak p95 {pct(all_peaks, 0.95):.0f} MiB, "
            f"CPU {statistics.median(all_cpu):.2f} s per question (p50)"
        )


if __name__ == "__main__":
    main()
