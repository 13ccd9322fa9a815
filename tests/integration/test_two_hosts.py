"""Two worker hosts on this machine sharing one Redis (hosts_helpers.py): each its own
network namespace, its own dockerd and its own repository mirror, Redis reached over the
veth address. Both take questions; each reaps only its own orphans; a question's sandbox
and the repository it read stay on the host that took it."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Worker
from rq.serializers import JSONSerializer

from jobs.question import Origin, Question
from jobs.queue import enqueue, fetch
from jobs.settings import JobSettings
from sandbox import labels
from tests.conftest import DEPLOYMENT, unavailable
from tests.integration.hosts_helpers import Host, free_subnets, tools_missing
from tests.integration.pipeline_helpers import ASKBOX, RedisServer, Workers, wait_final, wait_for, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.redis]


class Hosts:
    """Two hosts and the Redis they share (bound to 127.0.0.1 for the test and to the
    root-side address of each veth for the hosts; no other interface)."""

    def __init__(self, root: Path) -> None:
        tag = f"{os.getpid() % 100000:05d}"
        nets = free_subnets(2, seed=os.getpid())
        self.a = Host(f"hosta-{tag}", nets[0], root / "a")
        self.b = Host(f"hostb-{tag}", nets[1], root / "b")
        (root / "redis").mkdir(parents=True)
        self.redis = RedisServer(
            root / "redis",
            extra=("--bind", "127.0.0.1", self.a.root_address, self.b.root_address, "--protected-mode", "no"),
        )

    def start(self, images: list[str], archive: Path) -> Hosts:
        for host in (self.a, self.b):
            host.network_up()
        self.redis.start()
        for host in (self.a, self.b):
            host.start_dockerd()
        subprocess.run(["docker", "save", "-o", str(archive), *images], check=True)
        loads = [host.load(archive) for host in (self.a, self.b)]
        for load in loads:
            _, stderr = load.communicate(timeout=600)
            assert load.returncode == 0, stderr
        archive.unlink()
        return self

    def url_for(self, host: Host) -> str:
        return f"redis://{host.root_address}:{self.redis.port}/0"

    def stop(self) -> None:
        for host in (self.a, self.b):
            host.stop()
        self.redis.stop()


@pytest.fixture()
def hosts(tmp_path: Path, built_images: dict[str, str], cursor_standin_image: str) -> Iterator[Hosts]:
    if os.geteuid() != 0 or tools_missing():
        unavailable("network namespaces and a second dockerd", f"needs root and {tools_missing() or 'root'}")
    made = Hosts(Path(f"/tmp/askbox-2h-{os.getpid()}"))
    try:
        yield made.start(
            [built_images["sandbox"], built_images["egress-proxy"], cursor_standin_image], tmp_path / "images.tar"
        )
    finally:
        made.stop()
        subprocess.run(["rm", "-rf", f"/tmp/askbox-2h-{os.getpid()}"], check=False)


def host_env(hosts: Hosts, host: Host, cursor_image: str) -> dict[str, str]:
    mirror = host.root / "repo"
    if not mirror.exists():  # each host's own copy of the repository, saying whose it is
        mirror.mkdir()
        (mirror / "README.md").write_text(f"# demo repo, the mirror on {host.name}\n")
    env = worker_env(
        hosts.redis,
        mirror,
        host.egress_dir,
        ASKBOX_REDIS_URL=hosts.url_for(host),
        DOCKER_HOST=host.docker_host,
        ASKBOX_AGENT="cursor",
        ASKBOX_CURSOR_IMAGE=cursor_image,
        CURSOR_API_KEY="key-for-the-standin",
        ASKBOX_DEPLOYMENT=DEPLOYMENT,
    )
    return {k: v for k, v in env.items() if "proxy" not in k.lower()}


def sandboxes(host: Host) -> list:
    return host.client.containers.list(all=True, sparse=True, filters={"label": f"{labels.SANDBOX}={DEPLOYMENT}"})


def created(host: Host, since: float) -> dict[str, dict[str, str]]:
    """Sandboxes created on ``host`` since ``since``, by run id (= job id): their labels."""
    found = {}
    for event in host.client.events(
        since=int(since), until=int(time.time()) + 1, decode=True, filters={"type": "container", "event": "create"}
    ):
        attributes = event.get("Actor", {}).get("Attributes", {})
        if attributes.get(labels.SANDBOX) == DEPLOYMENT and labels.RUN_ID in attributes:
            found[attributes[labels.RUN_ID]] = attributes
    return found


def test_two_hosts_share_the_queue_and_keep_to_their_own(hosts, cursor_standin_image, sandbox_image, tmp_path):
    a, b = hosts.a, hosts.b
    for host in (a, b):  # a private /30 and nothing else: no default route out of a host
        assert host.routes().split() == [
            str(host.subnet),
            "dev",
            host.veth + "n",
            "proto",
            "kernel",
            "scope",
            "link",
            "src",
            host.address,
        ]
    env_a, env_b = (host_env(hosts, h, cursor_standin_image) for h in (a, b))

    # An orphan on host A: the process running it SIGKILLed.
    run = subprocess.Popen(
        a.command(ASKBOX, "sandbox", "run", "--image", sandbox_image, "--timeout", "600", "--", "sleep", "600"),
        env=env_a,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    [orphan] = wait_for(lambda: sandboxes(a), 60, "the sandbox on host A")
    run.kill()
    run.wait()
    owner = orphan.attrs["Labels"][labels.OWNER]
    assert owner.startswith(f"{a.name}:"), owner
    # Host B's reaper, even handed host A's daemon, leaves another host's sandbox alone ...
    reap = subprocess.run(
        b.command(ASKBOX, "sandbox", "reap", "--grace", "0"),
        capture_output=True,
        text=True,
        env={**env_b, "DOCKER_HOST": a.docker_host},
        timeout=60,
    )
    assert "reaped 0" in reap.stderr, reap.stderr
    workers_b = Workers(env_b, wrap=b.command)
    workers_a = Workers(env_a, wrap=a.command)
    redis = Redis(port=hosts.redis.port)
    try:
        workers_b.start(1, log_dir=tmp_path)
        wait_for(
            lambda: [w for w in Worker.all(connection=redis, serializer=JSONSerializer) if w.hostname == b.name],
            90,
            "host B's worker",
        )
        assert [c.id for c in sandboxes(a)] == [orphan.id]  # ... and so does its worker
        # ... and host A's worker, starting, removes it.
        workers_a.start(1, log_dir=tmp_path)
        wait_for(
            lambda: [w for w in Worker.all(connection=redis, serializer=JSONSerializer) if w.hostname == a.name],
            90,
            "host A's worker",
        )
        wait_for(lambda: not sandboxes(a), 60, "host A's reaper to remove its orphan")

        asked = time.time() - 1
        jobs = [
            enqueue(
                redis,
                Question(
                    origin=Origin(kind="terminal", user=f"user{i}"),
                    agent="cursor",
                    repo="demo",
                    text="[read:README.md] whose mirror is this?",
                ),
                JobSettings(),
            ).job
            for i in range(6)
        ]
        finals = {job.id: wait_final(redis, job.id, timeout=180, workers=workers_a) for job in jobs}
        hostnames = {w.name: w.hostname for w in Worker.all(connection=redis, serializer=JSONSerializer)}
        took = {job.id: hostnames[fetch(redis, job.id).worker_name] for job in jobs}
        on = {host.name: created(host, asked) for host in (a, b)}
    finally:
        workers_a.stop()
        workers_b.stop()
    print(
        f"\ntwo hosts: {a.name} took {list(took.values()).count(a.name)}, "
        f"{b.name} took {list(took.values()).count(b.name)} of {len(jobs)}"
    )
    assert set(took.values()) == {a.name, b.name}, took  # both take questions
    for job in jobs:
        host, other = (a, b) if took[job.id] == a.name else (b, a)
        assert finals[job.id]["kind"] == "answer", finals[job.id]
        assert f"the mirror on {host.name}" in finals[job.id]["text"]  # its own host's repository
        assert job.id in on[host.name] and job.id not in on[other.name]  # its sandbox on that host only
        assert on[host.name][job.id][labels.OWNER].startswith(f"{host.name}:")
    for host in (a, b):
        assert sandboxes(host) == []  # every run removed its own container
