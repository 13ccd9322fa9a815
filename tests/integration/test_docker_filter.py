"""`askbox docker-filter` against the real daemon: askbox's own work passes through it,
and what an attacker holding the worker's socket would try is refused, with nothing
created (checked on the real daemon, not the filter).

The filter is a real `askbox docker-filter` process on a socket of its own; the worker
side is docker-py (through `Sandbox`, the reaper, the egress proxies) and raw HTTP.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import h11
import pytest
from docker.errors import APIError
from docker.types import LogConfig, Mount
from pydantic import SecretStr

from sandbox import labels, owner, reaper
from sandbox.agents.adapters import GeminiAgent
from sandbox.agents.events import Result
from sandbox.agents.session import AgentSession
from sandbox.agents.settings import AgentSettings
from sandbox.allowlist import parse_allowlist, squid_config
from sandbox.egress import EgressProxies
from sandbox.outcome import OutcomeKind
from sandbox.runner import Sandbox
from sandbox.spec import Limits, SandboxSpec
from tests.conftest import DEPLOYMENT, unavailable
from tests.fakes.gemini_api import FakeGeminiAPI, Text
from tests.integration.pipeline_helpers import ASKBOX, wait_for

pytestmark = [pytest.mark.docker]

PREFIX = "askbox docker-filter: "
ATTACK = "askbox.attack"  # on every attacking container config: what must never exist afterwards
TOKEN = secrets.token_hex(6)


def short_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # AF_UNIX paths: 108 bytes at most
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def filter_dirs(tmp_path_factory, docker_client) -> Iterator[dict[str, Path]]:
    dirs = {
        "socket": short_dir("df"),
        "egress": short_dir("dfeg"),
        "gateway": short_dir("dfgw"),
        "repos": tmp_path_factory.mktemp("df-repos"),
        "snapshots": short_dir("dfsn"),
    }
    yield dirs
    # Every egress proxy of this root (the worker's, the sandboxes'), from the real daemon.
    for proxy in docker_client.containers.list(all=True, filters={"label": f"{labels.EGRESS_ROOT}={dirs['egress']}"}):
        proxy.remove(force=True)
    for path in (*dirs.values(), dirs["egress"].with_name(dirs["egress"].name + ".locks")):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def filter_socket(docker_client, built_images, filter_dirs) -> Iterator[Path]:
    """A real `askbox docker-filter` in front of the real daemon."""
    sock = filter_dirs["socket"] / "docker.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASKBOX_") or k == "ASKBOX_DEPLOYMENT"}
    env.update(
        ASKBOX_DOCKER_FILTER_SOCKET=str(sock),
        ASKBOX_EGRESS_SOCKET_DIR=str(filter_dirs["egress"]),
        ASKBOX_GATEWAY_SOCKET_DIR=str(filter_dirs["gateway"]),
        ASKBOX_REPO_SNAPSHOTS=str(filter_dirs["snapshots"]),
        ASKBOX_DOCKER_FILTER_ALLOW_BINDS=str(filter_dirs["repos"]),
        PYTHONUNBUFFERED="1",
        ASKBOX_DOCKER_FILTER_IMAGES="askbox/,askbox-test/",
    )  # and the cursor-agent stand-in's
    log = filter_dirs["socket"].with_suffix(".log")
    with log.open("wb") as out:
        proc = subprocess.Popen([ASKBOX, "docker-filter"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: sock.exists() or proc.poll() is not None, 20, "the filter's socket")
        assert proc.poll() is None, log.read_text()
        yield sock
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        print(log.read_text()[-4000:])
    assert not sock.exists(), "the filter left its socket behind"


@pytest.fixture(scope="module")
def filtered(filter_socket) -> docker.DockerClient:
    """The worker's view: docker-py through the filter only."""
    return docker.DockerClient(base_url=f"unix://{filter_socket}")


@pytest.fixture(scope="module")
def filtered_sandbox(filtered, docker_client, built_images, filter_dirs) -> Iterator[Sandbox]:
    proxies = EgressProxies(built_images["egress-proxy"], filter_dirs["egress"])
    yield Sandbox(filtered, proxies, deployment=DEPLOYMENT)
    proxies.stop_all(docker_client)  # the real daemon: the test's own cleanup, not the worker's


@pytest.fixture()
def filter_repo(filter_dirs) -> Path:
    root = filter_dirs["repos"] / secrets.token_hex(4)
    root.mkdir()
    (root / "README.md").write_text("# demo repo behind the filter\n")
    return root


@pytest.fixture(autouse=True)
def nothing_attacking_exists(docker_client) -> Iterator[None]:
    yield
    left = docker_client.containers.list(all=True, sparse=True, filters={"label": f"{ATTACK}={TOKEN}"})
    for container in left:
        container.remove(force=True)
    assert left == [], "a refused request created a container"


# -- askbox's own work passes ---------------------------------------------------------


@pytest.mark.usefixtures("no_leftovers")
def test_a_sandbox_run_with_repo_and_stdin_passes(filtered_sandbox, filter_repo, sandbox_image, docker_client):
    spec = SandboxSpec(
        image=sandbox_image,
        command=["sh", "-c", "cat /workspace/README.md; read line; echo got $line; id -u"],
        repo=filter_repo,
        stdin=b"hello\n",
        limits=Limits(timeout=60),
    )
    with filtered_sandbox.run(spec) as run:
        lines = [line.text for line in run if line.stream == "stdout"]
    assert run.outcome.kind is OutcomeKind.OK, run.outcome
    assert lines == ["# demo repo behind the filter", "got hello", "10001"]


@pytest.mark.usefixtures("no_leftovers")
def test_cancel_and_timeout_pass(filtered_sandbox, sandbox_image):
    spec = SandboxSpec(image=sandbox_image, command=["sleep", "60"], limits=Limits(timeout=60))
    run = filtered_sandbox.run(spec)
    wait_for(lambda: filtered_sandbox.cancel(spec.run_id), 20, "the run to be listed and killed")
    assert run.wait().kind is OutcomeKind.CANCELLED
    slow = filtered_sandbox.run(SandboxSpec(image=sandbox_image, command=["sleep", "60"], limits=Limits(timeout=1)))
    assert slow.wait().kind is OutcomeKind.TIMEOUT


@pytest.mark.usefixtures("no_leftovers")
def test_a_gemini_question_through_its_egress_proxy_passes(filtered_sandbox, filter_repo, built_images, filter_socket):
    """The Gemini CLI in its sandbox, its egress proxy (host network, exec) started through
    the filter, against the fake Gemini API on this host's loopback."""
    key = "test-key-" + secrets.token_hex(4)
    with FakeGeminiAPI(expected_key=key) as api:
        api.script(Text("It is a demo repository."))
        agent = GeminiAgent(AgentSettings(), api.base_url, SecretStr(key))
        events = list(
            AgentSession(
                filtered_sandbox, agent, "What is this repo?", repo=filter_repo, limits=Limits(timeout=120)
            ).events()
        )
    assert isinstance(events[-1], Result), events
    assert "It is a demo repository." in events[-1].text
    log = filter_socket.parent.with_suffix(".log").read_text()
    assert "allowed POST /v1." in log and "(egress askbox/egress-proxy:" in log  # the proxy came through it


@pytest.mark.redis
@pytest.mark.usefixtures("no_leftovers")
def test_a_worker_answers_a_queued_question_through_it(
    filter_socket, filter_dirs, filter_repo, redis_server, cursor_standin_image, tmp_path
):
    """A real `askbox worker` whose only Docker is the filter: its start-up (reaper, egress
    self-test through a real proxy) and a question through the queue, the cursor-agent
    stand-in behind its egress proxy."""
    from redis import Redis

    from jobs import queue as jobs_queue
    from jobs.question import Origin, Question
    from jobs.settings import JobSettings
    from tests.integration.pipeline_helpers import Workers, wait_final

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ASKBOX_") or k == "ASKBOX_DEPLOYMENT"},
        "DOCKER_HOST": f"unix://{filter_socket}",
        "ASKBOX_REDIS_URL": redis_server.url,
        "ASKBOX_AGENT": "cursor",
        "ASKBOX_CURSOR_IMAGE": cursor_standin_image,
        "CURSOR_API_KEY": "key-for-the-standin",
        "ASKBOX_EGRESS_SOCKET_DIR": str(filter_dirs["egress"]),
        "ASKBOX_REPOS": json.dumps({"demo": str(filter_repo)}),
        "ASKBOX_GATEWAY_SOCKET_DIR": str(filter_dirs["gateway"]),
        "PYTHONUNBUFFERED": "1",
        "ASKBOX_REPO_SNAPSHOTS": str(filter_dirs["snapshots"]),
    }
    redis = Redis.from_url(redis_server.url)
    question = Question(
        origin=Origin(kind="terminal", user="alice"), text="[transcript:subagent-sleep-v2] hi", repo="demo"
    )
    job_id = jobs_queue.enqueue(redis, question, JobSettings(repos={"demo": filter_repo})).job.id
    workers = Workers(env)
    try:
        [worker] = workers.start(1, burst=True, log_dir=tmp_path)
        final = wait_final(redis, job_id, 120, workers)
        assert worker.wait(timeout=60) == 0, workers.tail()
    finally:
        workers.stop()
    assert final["kind"] == "answer", (final, workers.tail())
    assert "egress self-test passed" in workers.tail(200)


def test_the_reaper_lists_and_removes_orphans_through_it(filtered, filtered_sandbox, docker_client, sandbox_image):
    orphan = docker_client.containers.create(  # a dead worker's run, made on the real daemon
        sandbox_image,
        ["sleep", "60"],
        network_mode="none",
        labels={
            labels.SANDBOX: DEPLOYMENT,
            labels.RUN_ID: f"orphan-{TOKEN}",
            labels.OWNER: "gone-host:1:0",
            labels.DEADLINE: str(int(time.time()) - 3600),
        },
    )
    assert f"orphan-{TOKEN}" in reaper.reap(filtered, DEPLOYMENT)
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(orphan.id)
    assert isinstance(filtered_sandbox.egress.reap_idle(filtered), list)


# -- what an attacker with the worker's socket tries ----------------------------------


def attack_labels(**extra: str) -> dict[str, str]:
    return {
        labels.SANDBOX: DEPLOYMENT,
        labels.RUN_ID: f"attack-{TOKEN}",
        labels.OWNER: owner.this_process(),
        labels.DEADLINE: str(int(time.time()) + 60),
        ATTACK: TOKEN,
        **extra,
    }


def sandbox_kwargs(repo: Path | None = None, **change: object) -> dict[str, object]:
    """docker-py arguments as sandbox/runner.py passes them; ``change`` replaces (None: drops) one."""
    kwargs: dict[str, object] = dict(
        user="10001:10001",
        labels=attack_labels(),
        network_mode="none",
        read_only=True,
        tmpfs={"/tmp": "rw,nosuid,nodev,size=16m"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        init=True,
        ipc_mode="private",
        cgroupns="private",
        pids_limit=64,
        mem_limit="64m",
        nano_cpus=10**9,
        mounts=[Mount("/etc/resolv.conf", "/dev/null", type="bind", read_only=True)]
        + ([Mount("/workspace", str(repo), type="bind", read_only=True)] if repo else []),
        log_config=LogConfig(type="json-file", config={"max-size": "1m"}),
    )
    for key, value in change.items():
        if value is None:
            kwargs.pop(key, None)
        else:
            kwargs[key] = value
    return kwargs


def assert_refused(call, docker_client, expect: str = "") -> str:
    with pytest.raises(APIError) as refused:
        call()
    assert refused.value.status_code == 403, refused.value
    explanation = str(refused.value.explanation)
    assert explanation.startswith(PREFIX) and expect in explanation, explanation
    assert docker_client.containers.list(all=True, sparse=True, filters={"label": f"{ATTACK}={TOKEN}"}) == []
    return explanation


def test_the_control_config_is_accepted(filtered, sandbox_image, filter_repo, docker_client):
    """Every attack below is this config with one thing changed: this one passes."""
    created = filtered.containers.create(sandbox_image, ["true"], **sandbox_kwargs(filter_repo))
    try:
        assert docker_client.containers.get(created.id).labels[ATTACK] == TOKEN
    finally:
        filtered.containers.get(created.id).remove(force=True)


@pytest.fixture(scope="module")
def evil_image(docker_client, sandbox_image) -> Iterator[str]:
    tag = f"evil/x-{TOKEN}:1"  # a real local image, not one of askbox's names
    docker_client.images.get(sandbox_image).tag(tag)
    yield tag
    docker_client.images.remove(tag)  # only the tag: the sandbox image stays


@pytest.fixture(scope="module")
def symlink_to_etc(filter_dirs) -> Path:
    link = filter_dirs["repos"] / f"link-{TOKEN}"
    link.symlink_to("/etc")
    return link


ATTACKS = {
    "privileged": (dict(privileged=True), "Privileged"),
    "bind /": (dict(mounts=[Mount("/host", "/", type="bind", read_only=True)]), "not under a directory"),
    "bind the docker socket": (dict(mounts=[Mount("/d.sock", "/var/run/docker.sock", type="bind")]), "read-only"),
    "bind the docker socket ro": (
        dict(mounts=[Mount("/d.sock", "/var/run/docker.sock", type="bind", read_only=True)]),
        "not under a directory",
    ),
    "bind /etc": (dict(mounts=[Mount("/host-etc", "/etc", type="bind", read_only=True)]), "not under a directory"),
    "binds, the old way": (dict(volumes={"/": {"bind": "/host", "mode": "ro"}}), "is not allowed"),  # Volumes, Binds
    "pid host": (dict(pid_mode="host"), "PidMode"),
    "network host": (dict(network_mode="host"), "NetworkMode"),
    "network bridge": (dict(network_mode="bridge"), "NetworkMode"),
    "ipc host": (dict(ipc_mode="host"), "IpcMode"),
    "uts host": (dict(uts_mode="host"), "UTSMode"),
    "userns host": (dict(userns_mode="host"), "UsernsMode"),
    "cgroupns host": (dict(cgroupns="host"), "CgroupnsMode"),
    "cap SYS_ADMIN": (dict(cap_add=["SYS_ADMIN"]), "CapAdd"),
    "capabilities kept": (dict(cap_drop=None), "CapDrop"),
    "device": (dict(devices=["/dev/kmsg:/dev/kmsg:rwm"]), "Devices"),
    "seccomp unconfined": (dict(security_opt=["no-new-privileges", "seccomp=unconfined"]), "SecurityOpt"),
    "apparmor unconfined": (dict(security_opt=["no-new-privileges", "apparmor=unconfined"]), "SecurityOpt"),
    "new privileges": (dict(security_opt=None), "SecurityOpt"),
    "user root": (dict(user="0:0"), "User"),
    "user root by name": (dict(user="root"), "User"),
    "root group": (dict(user="10001:0"), "User"),
    "uid alone (gid 0)": (dict(user="10001"), "User"),
    "egress labels on a sandbox": (dict(labels=attack_labels(**{labels.EGRESS: "x"})), "egress proxy's labels"),
    "writable root fs": (dict(read_only=False), "ReadonlyRootfs"),
    "no memory limit": (dict(mem_limit=None), "Memory"),
    "no process limit": (dict(pids_limit=None), "PidsLimit"),
    "no cpu limit": (dict(nano_cpus=None), "NanoCpus"),
    "oom immune": (dict(oom_score_adj=-1000), "OomScoreAdj"),
    "sysctl": (dict(sysctls={"kernel.shm_rmid_forced": "1"}), "Sysctls"),
    "logs to the network": (
        dict(log_config=LogConfig(type="syslog", config={"syslog-address": "udp://127.0.0.1:1"})),
        "LogConfig",
    ),
    "another deployment": (dict(labels=attack_labels(**{labels.SANDBOX: "someone-else"})), "askbox.sandbox="),
    "unlabelled": (dict(labels={ATTACK: TOKEN}), "askbox.sandbox="),
    "restart always": (dict(restart_policy={"Name": "always"}), "RestartPolicy"),
    "entrypoint": (dict(entrypoint=["/bin/sh"]), "Entrypoint"),
}


@pytest.mark.parametrize("name", ATTACKS)
def test_create_outside_the_policy_is_refused(name, filtered, sandbox_image, filter_repo, docker_client):
    change, expect = ATTACKS[name]
    assert_refused(
        lambda: filtered.containers.create(sandbox_image, ["true"], **sandbox_kwargs(filter_repo, **change)),
        docker_client,
        expect,
    )


def test_mount_tricks_are_refused(filtered, sandbox_image, filter_repo, filter_dirs, symlink_to_etc, docker_client):
    def mount(source: str, read_only: bool = True):
        return lambda: filtered.containers.create(
            sandbox_image,
            ["true"],
            **sandbox_kwargs(mounts=[Mount("/workspace", source, type="bind", read_only=read_only)]),
        )

    assert_refused(mount(str(symlink_to_etc)), docker_client, "symlink")
    assert_refused(mount(f"{filter_dirs['repos']}/../../etc"), docker_client, "not normalised")
    assert_refused(mount(str(filter_repo), read_only=False), docker_client, "read-only")  # the repo, writable
    assert_refused(mount(f"{filter_dirs['repos']}/not-there-{TOKEN}"), docker_client, "not visible to the filter")
    assert_refused(
        lambda: filtered.containers.create(
            sandbox_image, ["true"], **sandbox_kwargs(mounts=[Mount("/workspace", "vol", type="volume")])
        ),
        docker_client,
        "only bind mounts",
    )


def test_images_that_are_not_askbox_are_refused(filtered, evil_image, egress_image_name, docker_client):
    assert_refused(
        lambda: filtered.containers.create(evil_image, ["true"], **sandbox_kwargs()),
        docker_client,
        "not one of askbox's images",
    )
    image_id = docker_client.images.get(evil_image).id  # sha256:<hex>, and its short form
    assert_refused(
        lambda: filtered.containers.create(image_id, ["true"], **sandbox_kwargs()),
        docker_client,
        "not one of askbox's images",
    )
    assert_refused(
        lambda: filtered.containers.create(image_id[7:19], ["true"], **sandbox_kwargs()),
        docker_client,
        "repository:tag",
    )
    assert_refused(lambda: filtered.images.get(evil_image), docker_client, "not one of askbox's images")
    # docker-py's run() pulls an image it does not find: the pull is refused too.
    assert_refused(
        lambda: filtered.images.pull("askbox/sandbox", tag=f"not-here-{TOKEN}"),
        docker_client,
        "not a call askbox's worker makes",
    )


@pytest.mark.usefixtures("no_leftovers")
def test_a_refused_run_says_so_and_not_that_docker_is_down(filtered_sandbox, evil_image, docker_client):
    run = filtered_sandbox.run(SandboxSpec(image=evil_image, command=["true"], labels={"attack": TOKEN}))
    outcome = run.wait()
    assert outcome.kind is OutcomeKind.INFRA_ERROR
    assert outcome.message.startswith("refused by the Docker filter: image 'evil/x-"), outcome.message
    assert "not reachable" not in outcome.message


@pytest.fixture(scope="module")
def egress_image_name(built_images) -> str:
    return built_images["egress-proxy"]


def test_the_egress_image_gets_the_host_network_only_as_a_proxy(
    filtered, egress_image_name, filter_dirs, docker_client
):
    proxy = dict(
        user="10002:10002",
        network_mode="host",
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=64,
        mem_limit="64m",
        environment={"ASKBOX_SQUID_CONF": squid_config(parse_allowlist("x.test"))},
        labels={
            labels.EGRESS: "x",
            labels.EGRESS_ROOT: str(filter_dirs["egress"]),
            ATTACK: TOKEN,
            labels.EGRESS_ALLOW: "x.test:443",
        },
        mounts=[Mount("/run/askbox-egress", str(filter_dirs["egress"]), type="bind")],
    )
    assert_refused(
        lambda: filtered.containers.create(egress_image_name, ["sh", "-c", "id"], **proxy), docker_client, "Cmd"
    )
    assert_refused(
        lambda: filtered.containers.create(
            egress_image_name,
            **{**proxy, "mounts": [Mount("/run/askbox-egress", str(filter_dirs["repos"]), type="bind")]},
        ),
        docker_client,
        "not under a directory",
    )
    assert_refused(
        lambda: filtered.containers.create(egress_image_name, **{**proxy, "user": "0:0"}), docker_client, "User"
    )
    assert_refused(
        lambda: filtered.containers.create(
            egress_image_name, **{**proxy, "labels": {labels.EGRESS: "x", labels.EGRESS_ROOT: "/", ATTACK: TOKEN}}
        ),
        docker_client,
        "egress socket root",
    )


@pytest.fixture()
def victim(docker_client, sandbox_image) -> Iterator:
    """A container askbox did not start (made on the real daemon, no askbox labels)."""
    container = docker_client.containers.run(
        sandbox_image, ["sleep", "120"], detach=True, network_mode="none", labels={"test.victim": TOKEN}
    )
    yield container
    container.remove(force=True)


def test_containers_askbox_did_not_start_cannot_be_touched(filtered, victim, docker_client):
    seen = filtered.api  # the low-level calls, by id and by a short id prefix
    for ref in (victim.id, victim.id[:12], victim.name):
        assert_refused(lambda ref=ref: seen.exec_create(ref, SQUID_UP), docker_client, "not one of this deployment's")
        assert_refused(lambda ref=ref: seen.inspect_container(ref), docker_client, "not one of this deployment's")
        assert_refused(lambda ref=ref: seen.kill(ref), docker_client, "not one of this deployment's")
        assert_refused(
            lambda ref=ref: seen.remove_container(ref, force=True), docker_client, "not one of this deployment's"
        )
        assert_refused(lambda ref=ref: seen.logs(ref), docker_client, "not one of this deployment's")
        assert_refused(lambda ref=ref: seen.attach(ref, stream=False), docker_client, "not one of this deployment's")
    assert_refused(lambda: filtered.containers.list(all=True), docker_client, "askbox.* label")
    assert docker_client.containers.get(victim.id).status == "running"


SQUID_UP = ["test", "-s", "/tmp/squid.port"]  # an exec askbox makes (sandbox/egress.py)


@pytest.mark.usefixtures("no_leftovers")
def test_exec_only_into_egress_proxies_and_only_askbox_commands(
    filtered, filtered_sandbox, sandbox_image, docker_client
):
    spec = SandboxSpec(image=sandbox_image, command=["sleep", "30"], limits=Limits(timeout=30))
    with filtered_sandbox.run(spec) as run:
        found = wait_for(
            lambda: filtered.containers.list(filters={"label": f"{labels.RUN_ID}={spec.run_id}"}), 20, "the sandbox"
        )
        assert_refused(lambda: filtered.api.exec_create(found[0].id, SQUID_UP), docker_client, "only in egress proxies")
        assert_refused(lambda: filtered.api.exec_create(found[0].id, SQUID_UP, user="10001"), docker_client, "User")
        run.cancel()
    proxies = filtered_sandbox.egress
    proxy, _ = proxies._ensure_proxy(filtered, parse_allowlist("localhost:1"), wait=30)
    assert_refused(lambda: filtered.api.exec_create(proxy.id, ["sh", "-c", "id"]), docker_client, "exec of ['sh']")
    assert_refused(lambda: filtered.api.exec_create(proxy.id, SQUID_UP, user="0"), docker_client, "User")
    assert_refused(lambda: filtered.api.exec_create(proxy.id, SQUID_UP, privileged=True), docker_client, "Privileged")
    assert proxy.exec_run(SQUID_UP).exit_code == 0  # the control: askbox's own exec passes


# -- raw HTTP on the filter's socket ----------------------------------------------------


def raw(sock: Path, data: bytes, timeout: float = 10.0, half_close: bool = False) -> tuple[int, dict, bytes]:
    """Send ``data`` as is; the first response, parsed by h11, and every byte that came back."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(timeout)
        conn.connect(str(sock))
        try:
            conn.sendall(data)
            if half_close:
                conn.shutdown(socket.SHUT_WR)
        except BrokenPipeError:  # refused before the whole body was sent: the answer is there to read
            pass
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(received)
    response, body = client.next_event(), b""
    while isinstance(event := client.next_event(), h11.Data):
        body += event.data
    assert isinstance(response, h11.Response), received[:300]
    return response.status_code, json.loads(body) if body.startswith(b"{") else {}, received


def http(method: str, path: str, body: bytes | None = None, headers: str = "") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body is not None else ""
    return f"{method} {path} HTTP/1.1\r\nHost: docker\r\n{headers}{length}\r\n".encode() + (body or b"")


def create_body(image: str, **host: object) -> dict:
    """A sandbox create body as docker-py sends it for sandbox_kwargs()."""
    host_config = {
        "NetworkMode": "none",
        "ReadonlyRootfs": True,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "IpcMode": "private",
        "CgroupnsMode": "private",
        "Memory": 64 << 20,
        "PidsLimit": 64,
        "NanoCpus": 10**9,
        "Mounts": [{"Type": "bind", "Source": "/dev/null", "Target": "/etc/resolv.conf", "ReadOnly": True}],
    }
    host_config.update(host)
    return {
        "Image": image,
        "Cmd": ["true"],
        "User": "10001:10001",
        "Labels": attack_labels(),
        "HostConfig": host_config,
    }


def dumps(value: object) -> bytes:
    return json.dumps(value).encode()


def assert_raw_refused(sock: Path, data: bytes, docker_client, status: int = 403, expect: str = "") -> None:
    code, payload, received = raw(sock, data)
    assert code == status, received[:500]
    assert payload.get("message", "").startswith(PREFIX) and expect in payload["message"], payload
    assert received.count(b"HTTP/1.1 ") == 1, received  # one answer: nothing after the request was served
    assert docker_client.containers.list(all=True, sparse=True, filters={"label": f"{ATTACK}={TOKEN}"}) == []


def test_raw_control_create_passes(filter_socket, sandbox_image, docker_client):
    code, _, received = raw(filter_socket, http("GET", "/v1.41/_ping"), half_close=True)  # like `nc -N`
    assert code == 200 and received.endswith(b"OK"), received
    for path in ("/containers/create", "/v1.41/containers/create"):
        code, payload, received = raw(
            filter_socket, http("POST", path, dumps(create_body(sandbox_image)), "Content-Type: application/json\r\n")
        )
        assert code == 201, received[:500]
        docker_client.containers.get(payload["Id"]).remove(force=True)


def test_raw_path_and_query_tricks_are_refused(filter_socket, sandbox_image, docker_client):
    privileged = dumps(create_body(sandbox_image, Privileged=True))
    good = dumps(create_body(sandbox_image))
    for path in ("/containers/create", "/v1.41/containers/create", "/v1.99/containers/create"):
        assert_raw_refused(filter_socket, http("POST", path, privileged), docker_client, expect="Privileged")
    for path in (
        "//containers/create",
        "/v1.41//containers/create",
        "/v1.41/containers%2Fcreate",
        "/v1.41/%63ontainers/create",
        "/v1.41/images/../containers/create",
        "/v1.41/./containers/create",
        "/v1.41/containers/create/",
        "http://docker/v1.41/containers/create",
    ):
        assert_raw_refused(filter_socket, http("POST", path, good), docker_client, expect="canonical")
    assert_raw_refused(filter_socket, http("POST", "/v1.23/containers/create", good), docker_client, expect="older")
    assert_raw_refused(
        filter_socket, http("POST", "/containers/create?name=evil", good), docker_client, expect="askbox-"
    )
    assert_raw_refused(
        filter_socket,
        http("POST", "/containers/create?name=askbox-a&name=askbox-b", good),
        docker_client,
        expect="twice",
    )
    assert_raw_refused(
        filter_socket, http("POST", "/containers/create?platform=linux", good), docker_client, expect="platform"
    )
    assert_raw_refused(
        filter_socket, http("POST", "/containers/create?name=askbox-a;x=1", good), docker_client, expect="malformed"
    )


def test_raw_json_tricks_are_refused(filter_socket, sandbox_image, docker_client):
    def send(text: str, expect: str) -> None:
        assert_raw_refused(
            filter_socket, http("POST", "/v1.41/containers/create", text.encode()), docker_client, expect=expect
        )

    base = create_body(sandbox_image)
    host = json.dumps(base["HostConfig"])[:-1]  # open: fields are appended below
    rest = json.dumps({k: v for k, v in base.items() if k != "HostConfig"})[1:-1]
    send('{%s, "HostConfig": %s, "privileged": true}}' % (rest, host), "Privileged")  # Go ignores case
    send('{%s, "HostConfig": %s, "Privileged": false, "PRIVILEGED": true}}' % (rest, host), "twice")
    send('{%s, "HostConfig": %s, "\\u017fecurityOpt": ["seccomp=unconfined"]}}' % (rest, host), "not ASCII")  # ſ
    send('{%s, "HostConfig": %s}, "Binds": ["/:/host"]}' % (rest, host), "create.Binds")  # the old top-level fields
    send('{%s, "HostConfig": %s, "MaskedPaths": []}}' % (rest, host), "MaskedPaths")  # [] unmasks /proc
    send('{%s, "HostConfig": %s, "Memory": NaN}}' % (rest, host), "not JSON")
    send('{%s, "HostConfig": %s, "Binds": ["/:/host"]}}' % (rest, host), "Binds")
    send('{%s, "HostConfig": %s, "CapAdd": ["SYS_ADMIN"]}, "hostconfig": {}}' % (rest, host), "twice")
    assert_raw_refused(
        filter_socket, http("POST", "/v1.41/containers/create", b"[1]"), docker_client, expect="JSON object"
    )
    assert_raw_refused(
        filter_socket,
        http("POST", "/v1.41/containers/create", json.dumps(base).encode("utf-16")),
        docker_client,
        expect="not JSON",
    )


def test_raw_framing_tricks_are_refused(filter_socket, sandbox_image, docker_client):
    privileged = dumps(create_body(sandbox_image, Privileged=True))
    # chunked: decoded and checked like any body
    chunked = f"{len(privileged):x}\r\n".encode() + privileged + b"\r\n0\r\n\r\n"
    assert_raw_refused(
        filter_socket,
        http("POST", "/v1.41/containers/create", None, "Transfer-Encoding: chunked\r\n") + chunked,
        docker_client,
        expect="Privileged",
    )
    # Content-Length and Transfer-Encoding both: the classic smuggling set-up
    assert_raw_refused(
        filter_socket,
        http("POST", "/v1.41/containers/create", None, "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n") + chunked,
        docker_client,
        status=400,
        expect="smuggling",
    )
    # a harmless request with a create pipelined behind it: only the first is answered
    code, _, received = raw(filter_socket, http("GET", "/_ping") + http("POST", "/v1.41/containers/create", privileged))
    assert code == 200 and received.count(b"HTTP/1.1 ") == 1, received
    # the body of a GET smuggling a second request
    assert_raw_refused(
        filter_socket,
        http("GET", "/_ping", http("POST", "/v1.41/containers/create", privileged)),
        docker_client,
        expect="no request body",
    )
    # oversized
    huge = dumps(create_body(sandbox_image) | {"Env": ["X=" + "a" * (2 << 20)]})
    assert_raw_refused(
        filter_socket, http("POST", "/v1.41/containers/create", huge), docker_client, status=413, expect="over"
    )
    assert_raw_refused(filter_socket, b"NOT HTTP\r\n\r\n", docker_client, status=400, expect="malformed")


def test_a_request_behind_a_failed_attach_does_not_reach_the_daemon(filter_socket, sandbox_image, docker_client):
    """Attach hands the connection to the container; when the daemon then answers with an
    error (here: the container is paused), whatever the caller sent behind the request must
    not reach the daemon as a second request."""
    paused = docker_client.containers.run(
        sandbox_image,
        ["sleep", "60"],
        detach=True,
        network_mode="none",
        labels={labels.SANDBOX: DEPLOYMENT, labels.RUN_ID: f"paused-{TOKEN}"},
    )
    try:
        paused.pause()
        attach = http(
            "POST",
            f"/v1.41/containers/{paused.id}/attach?stream=1&stdin=1&stdout=1",
            b"",
            "Connection: Upgrade\r\nUpgrade: tcp\r\n",
        )
        smuggled = http(
            "POST",
            "/v1.41/containers/create",
            dumps(create_body(sandbox_image, Privileged=True)),
            "Content-Type: application/json\r\n",
        )
        code, _, received = raw(filter_socket, attach + smuggled)
        assert code == 409 and b"is paused" in received, received[:500]  # the daemon's own answer
        assert received.count(b"HTTP/1.1 ") == 1, received
        assert docker_client.containers.list(all=True, sparse=True, filters={"label": f"{ATTACK}={TOKEN}"}) == []
    finally:
        paused.remove(force=True)


def test_raw_control_chunked_create_passes(filter_socket, sandbox_image, docker_client):
    good = dumps(create_body(sandbox_image))
    chunked = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (good[:10], good[10:])) + b"0\r\n\r\n"
    code, payload, received = raw(
        filter_socket, http("POST", "/v1.41/containers/create", None, "Transfer-Encoding: chunked\r\n") + chunked
    )
    assert code == 201, received[:500]
    docker_client.containers.get(payload["Id"]).remove(force=True)


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/v1.41/images/create?fromImage=alpine&tag=latest"),
        ("POST", "/v1.41/build"),
        ("POST", "/v1.41/images/load"),
        ("POST", "/v1.41/commit?container=x"),
        ("GET", "/v1.41/images/json"),
        ("POST", "/v1.41/volumes/create"),
        ("GET", "/v1.41/volumes"),
        ("POST", "/v1.41/networks/create"),
        ("POST", "/v1.41/plugins/pull?remote=x"),
        ("GET", "/v1.41/swarm"),
        ("POST", "/v1.41/swarm/init"),
        ("GET", "/v1.41/events"),
        ("POST", "/v1.41/session"),
        ("GET", "/v1.41/containers/json"),
        ("PUT", "/v1.41/containers/x/archive?path=/"),
        ("GET", "/v1.41/containers/x/archive?path=/"),
        ("GET", "/v1.41/containers/x/export"),
        ("POST", "/v1.41/containers/x/update"),
        ("POST", "/v1.41/containers/x/rename?name=y"),
        ("POST", "/v1.41/containers/prune"),
        ("POST", "/v1.41/images/askbox/sandbox:x/tag?repo=askbox/y"),
    ],
)
def test_calls_askbox_does_not_make_are_refused(method, path, filter_socket, docker_client):
    assert_raw_refused(filter_socket, http(method, path, b"" if method in {"POST", "PUT"} else None), docker_client)


# -- the compose override -------------------------------------------------------------


def test_the_compose_override_gives_the_worker_only_the_filter(tmp_path):
    compose = shutil.which("docker-compose")
    if compose is None:
        unavailable("docker-compose", "not installed (apt-get install -y docker-compose)")
    root = Path(__file__).resolve().parents[2]
    empty = tmp_path / "empty.env"  # not a developer's .env
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASKBOX_", "COMPOSE_", "DOCKER_"))}
    env.update(ASKBOX_REDIS_PASSWORD="pw", ASKBOX_REPOS_DIR="/data/checkouts")
    done = subprocess.run(
        [
            compose,
            "--env-file",
            str(empty),
            "-f",
            str(root / "compose.yaml"),
            "-f",
            str(root / "compose.docker-filter.yaml"),
            "config",
        ],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr

    def service(name: str) -> str:  # one service's block (pyyaml is not a dependency)
        services = done.stdout[done.stdout.index("\nservices:\n") :]
        start = services.index(f"\n  {name}:\n")
        end = re.search(r"\n  \S|\n\S", services[start + 1 :])
        return services[start : start + 1 + end.start()] if end else services[start:]

    worker, docker_filter = service("worker"), service("docker-filter")
    assert "docker.sock:/var/run/docker.sock" not in worker  # the real socket is gone
    assert "- /dev/null:/var/run/docker.sock:ro" in worker
    assert "- docker-filter:/run/askbox-docker:ro" in worker
    assert "DOCKER_HOST: unix:///run/askbox-docker/docker.sock" in worker
    assert "docker-filter:\n        condition: service_healthy" in worker
    assert "- /var/run/docker.sock:/var/run/docker.sock:rw" in docker_filter
    assert "network_mode: none" in docker_filter and "- ALL" in docker_filter and "read_only: true" in docker_filter
    # The directories mounts may name, seen by the filter at the same paths: read-only but
    # the two it writes (it seals snapshots, makes egress socket directories: issue 17).
    assert "- /data/checkouts:/data/checkouts:ro" in docker_filter
    assert "ASKBOX_DOCKER_FILTER_ALLOW_BINDS: /data/checkouts" in docker_filter
    assert "- /run/askbox/gateway:/run/askbox/gateway:ro" in docker_filter
    assert "- /run/askbox/egress:/run/askbox/egress:rw" in docker_filter
    assert "- /var/lib/askbox/snapshots:/var/lib/askbox/snapshots:rw" in docker_filter
    assert "cap_add:\n    - CHOWN\n    - DAC_OVERRIDE\n    cap_drop:\n    - ALL\n" in docker_filter
    # Nothing a container binds is the worker's to write: only the snapshots' staging area.
    for mount in (
        "/var/lib/askbox/snapshots:/var/lib/askbox/snapshots:ro",
        "/run/askbox/egress:/run/askbox/egress:ro",
        "/run/askbox/gateway:/run/askbox/gateway:ro",
        "/data/checkouts:/data/checkouts:ro",
        "/var/lib/askbox/snapshots/staging:/var/lib/askbox/snapshots/staging:rw",
        "egress-locks:/run/askbox/egress.locks:rw",
    ):
        assert f"- {mount}\n" in worker, mount
    writable = [line for line in worker.splitlines() if line.endswith(":rw") and line.strip().startswith("- /")]
    assert writable == ["    - /var/lib/askbox/snapshots/staging:/var/lib/askbox/snapshots/staging:rw"], writable
