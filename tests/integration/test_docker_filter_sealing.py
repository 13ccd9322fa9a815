"""Issue 17 from the worker's seat: a process that holds only askbox docker-filter's socket
and can write exactly what the compose worker can write, against the real filter in front
of the real daemon. It must never reach the daemon unfiltered.

The seat is a non-root uid (``setpriv``-like: its own uid and gid, no supplementary group)
that owns the snapshots' staging area and the egress locks, and nothing else: the sealed
snapshots, the gateway's and the egress sockets' directories are root's, as they are
read-only mounts for the compose worker. Every attack is made the way the issue describes
it (create a sandbox binding a real directory, replace that with a symlink to /var/run,
start it, ask the socket for /version from inside) and shown to fail; askbox's own work
(a snapshot sealed by the filter, an egress proxy and run directory made by it, a sandbox
reading the snapshot and reaching an allowlisted server) passes from the same seat.

"Reached the daemon" means /version answered; nothing else is ever sent to it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from docker.errors import APIError
from docker.types import Mount

from sandbox import labels, owned_dirs
from tests.conftest import DEPLOYMENT
from tests.integration.git_helpers import git
from tests.integration.pipeline_helpers import ASKBOX, wait_for
from tests.integration.test_egress import local_server  # noqa: F401 - a fixture

pytestmark = [pytest.mark.docker]

SEAT_UID = 10123  # neither the sandbox's (10001) nor the proxy's (10002)
TOKEN = f"seat-{os.getpid()}"
ATTACK = "askbox.attack"  # on every container made here: what the teardown removes
PREFIX = "askbox docker-filter: "
DOCKER_GID = os.stat("/var/run/docker.sock").st_gid  # the group that opens the real socket


@dataclass(frozen=True)
class Seat:
    base: Path
    socket: Path
    snapshots: Path
    egress: Path
    locks: Path
    gateway: Path
    repo: Path
    commit: str
    log: Path

    def sealed_root(self) -> Path:
        return self.snapshots / "sealed"


@pytest.fixture(scope="module")
def seat(docker_client, built_images) -> Iterator[Seat]:
    base = Path(tempfile.mkdtemp(prefix="dfs", dir="/tmp"))  # AF_UNIX paths: 108 bytes at most
    base.chmod(0o755)
    mine = {"snapshots/staging", "egress.locks", "home"}  # what the seat may write
    for sub in ("filter", "snapshots/staging", "snapshots/sealed", "egress", "egress.locks", "gateway", "home"):
        (base / sub).mkdir(parents=True, exist_ok=True)
        (base / sub).chmod(0o755)
        if sub in mine:
            os.chown(base / sub, SEAT_UID, SEAT_UID)
    repo = base / "repo"  # a checkout the seat reads (ASKBOX_REPOS), root's
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# the sealed snapshot\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "one")
    commit = git(repo, "rev-parse", "HEAD")
    sock = base / "filter" / "docker.sock"
    log = base / "filter.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASKBOX_") or k == "ASKBOX_DEPLOYMENT"}
    env.update(
        ASKBOX_DOCKER_FILTER_SOCKET=str(sock),
        ASKBOX_EGRESS_SOCKET_DIR=str(base / "egress"),
        ASKBOX_GATEWAY_SOCKET_DIR=str(base / "gateway"),
        ASKBOX_REPO_SNAPSHOTS=str(base / "snapshots"),
        PYTHONUNBUFFERED="1",
    )
    with log.open("wb") as out:
        proc = subprocess.Popen([ASKBOX, "docker-filter"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: sock.exists() or proc.poll() is not None, 20, "the filter's socket")
        assert proc.poll() is None, log.read_text()
        os.chown(sock, 0, SEAT_UID)  # the filter's socket is the seat's, as the worker's group's
        yield Seat(
            base=base,
            socket=sock,
            snapshots=base / "snapshots",
            egress=base / "egress",
            locks=base / "egress.locks",
            gateway=base / "gateway",
            repo=repo,
            commit=commit,
            log=log,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        print(log.read_text()[-6000:])
        for container in docker_client.containers.list(all=True, filters={"label": f"{ATTACK}={TOKEN}"}):
            container.remove(force=True)
        for proxy in docker_client.containers.list(
            all=True, filters={"label": f"{labels.EGRESS_ROOT}={base / 'egress'}"}
        ):
            proxy.remove(force=True)
        shutil.rmtree(base, ignore_errors=True)


PRELUDE = '''
import errno, json, os, sys, time
from pathlib import Path
import docker
from docker.errors import APIError
from docker.types import LogConfig, Mount
ARGS = json.loads(os.environ["SEAT_ARGS"])
client = docker.from_env()  # DOCKER_HOST: the filter's socket, the only Docker this process has
RESULT = {}

def refusal(call):
    """The filter's refusal of a call, or 'ALLOWED' (then what it made is removed)."""
    try:
        made = call()
    except APIError as exc:
        return f"{exc.status_code} {exc.explanation}"
    if hasattr(made, "remove"):
        made.remove(force=True)
    return "ALLOWED"

def errno_of(call):
    try:
        call()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "DONE"

def sandbox_args(user="10001:10001", mounts=(), command=("true",)):
    return dict(image=ARGS["sandbox_image"], command=list(command), user=user, network_mode="none", read_only=True,
                labels={"askbox.sandbox": ARGS["deployment"], "askbox.run": "seat-" + str(time.time_ns()),
                        "askbox.owner": "seat:1:1", "askbox.deadline": str(int(time.time()) + 120),
                        "askbox.attack": ARGS["token"]},
                tmpfs={"/tmp": "rw,nosuid,nodev,size=16m"}, cap_drop=["ALL"], security_opt=["no-new-privileges"],
                ipc_mode="private", cgroupns="private", pids_limit=64, mem_limit="64m", nano_cpus=10**9,
                mounts=[Mount("/etc/resolv.conf", "/dev/null", type="bind", read_only=True), *mounts],
                log_config=LogConfig(type="json-file", config={"max-size": "1m"}))
'''


ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def seat_python() -> tuple[list[str], dict[str, str]]:
    """This interpreter with this checkout's packages, runnable by the seat's uid: the
    venv's own when the seat may execute it; else (a venv made from an interpreter under
    /root, which other uids cannot enter) the system's of the same version, pointed at the
    venv's packages and this checkout."""

    def runs(argv: list[str], env: dict[str, str]) -> bool:
        try:
            probe = subprocess.run(
                [*argv, "-c", "import docker, sandbox.owned_dirs"],
                env=env,
                capture_output=True,
                timeout=60,
                user=SEAT_UID,
                group=SEAT_UID,
                extra_groups=[],
                cwd="/",
            )
        except PermissionError:
            return False
        return probe.returncode == 0

    if runs([sys.executable], {}):
        return [sys.executable], {}
    system = shutil.which("python3", path="/usr/bin:/bin")
    packages = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    env = {"PYTHONPATH": f"{ROOT}:{packages}"}
    if system and runs([system], env):
        return [system], env
    pytest.fail(f"no Python the uid {SEAT_UID} may run with askbox's packages ({sys.executable}, {system})")


def as_seat(seat: Seat, script: str, timeout: float = 240, **args: object) -> dict:
    """Run ``script`` from the worker's seat: the seat's uid and gid, no other group, the
    filter's socket as its Docker. Returns the JSON it printed last (RESULT)."""
    path = seat.base / "home" / f"script-{time.time_ns()}.py"
    path.write_text(PRELUDE + textwrap.dedent(script) + "\nprint(json.dumps(RESULT))\n")
    python, python_env = seat_python()
    env = {
        **python_env,
        "PATH": os.environ["PATH"],
        "HOME": str(seat.base / "home"),
        "DOCKER_HOST": f"unix://{seat.socket}",
        "ASKBOX_DEPLOYMENT": DEPLOYMENT,
        "SEAT_ARGS": json.dumps(
            {
                "token": TOKEN,
                "deployment": DEPLOYMENT,
                "snapshots": str(seat.snapshots),
                "egress": str(seat.egress),
                "locks": str(seat.locks),
                "repo": str(seat.repo),
                "commit": seat.commit,
                **args,
            }
        ),
    }
    done = subprocess.run(
        [*python, str(path)],
        env=env,
        cwd=seat.base / "home",
        capture_output=True,
        text=True,
        timeout=timeout,
        user=SEAT_UID,
        group=SEAT_UID,
        extra_groups=[],
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_seat_is_what_the_compose_worker_is(seat):
    """The premise: this uid writes the staging area and its locks, and nothing a container binds."""
    found = as_seat(
        seat,
        """
        import socket
        RESULT["ids"] = [os.getuid(), os.getgid(), os.getgroups()]
        for name in ("snapshots/staging", "egress.locks", "snapshots/sealed", "egress", "gateway", "repo"):
            RESULT[name] = errno_of(lambda: os.mkdir(Path(ARGS["snapshots"]).parent / name / "probe"))
        RESULT["real socket"] = errno_of(lambda: socket.socket(socket.AF_UNIX).connect("/var/run/docker.sock"))
    """,
        sandbox_image="unused",
    )
    assert found.pop("ids") == [SEAT_UID, SEAT_UID, []]
    assert found == {
        "snapshots/staging": "DONE",
        "egress.locks": "DONE",
        "snapshots/sealed": "EACCES",
        "egress": "EACCES",
        "gateway": "EACCES",
        "repo": "EACCES",
        "real socket": "EACCES",
    }


def test_the_issue_s_swap_never_reaches_the_daemon(seat, sandbox_image, docker_client):
    """(a) create a sandbox binding a snapshot, replace it (or a parent) with a symlink to
    /var/run, start it, ask the socket for /version from inside: the replace fails, and
    binding what the seat can replace (staging, inside a sealed snapshot) is refused."""
    found = as_seat(
        seat,
        """
        from jobs.repos.resolve import RepoRef
        from jobs.repos.snapshot import Snapshots
        store = Snapshots(Path(ARGS["snapshots"]))
        ref = RepoRef(name="web", path=Path(ARGS["repo"]))
        probe = ("ls -a /workspace; curl -s -m 5 --unix-socket /workspace/docker.sock http://x/version"
                 " || echo curl-failed-$?; curl -s -m 5 --unix-socket /workspace/inner/docker.sock http://x/version"
                 " || echo inner-curl-failed-$?")
        with store.lease(ref, Path(ARGS["repo"]) / ".git", ARGS["commit"]) as tree:  # sealed by the filter
            RESULT["tree"] = str(tree)
            # The issue's order: create (a real directory now), replace, start.
            victim = client.containers.create(**sandbox_args(mounts=[Mount("/workspace", str(tree), type="bind",
                                                                           read_only=True)], command=["sh", "-c", probe]))
            aside = tree.with_name("aside")
            RESULT["replace"] = {
                "rename the snapshot": errno_of(lambda: os.rename(tree, aside)),
                "rmdir the snapshot": errno_of(lambda: os.rmdir(tree)),
                "symlink beside it": errno_of(lambda: os.symlink("/var/run", tree.with_name("x" * 40 + "-00000000"))),
                "rename its repository": errno_of(lambda: os.rename(tree.parent, tree.parent.with_name("aside"))),
                "rename sealed/": errno_of(lambda: os.rename(tree.parent.parent, tree.parent.parent.with_name("aside"))),
                "seal a symlink": None,
            }
            # What the seat can write inside the snapshot (it built it: its contents are its
            # own) is no bind source: and a symlink there points into the container.
            os.mkdir(tree / "inner")
            os.rmdir(tree / "inner")
            os.symlink("/var/run", tree / "inner")
            os.mkdir(tree / "dir")
            RESULT["bind inside the snapshot"] = refusal(lambda: client.containers.create(**sandbox_args(
                mounts=[Mount("/workspace", str(tree / "dir"), type="bind", read_only=True)])))
            # The staging area is the seat's: a build there, bound directly, then swapped.
            build = Path(ARGS["snapshots"]) / "staging" / ref.slug / ".tmp-swap"
            build.mkdir()
            RESULT["bind staging"] = refusal(lambda: client.containers.create(**sandbox_args(
                mounts=[Mount("/workspace", str(build), type="bind", read_only=True)])))
            # Sealing a symlink: the filter moves it out of staging, finds no directory, removes it.
            evil = build.with_name(".tmp-evil")
            evil.symlink_to("/var/run")
            from sandbox.owned_dirs import perform
            try:
                perform("snapshots/seal", store.root, slug=ref.slug, build=evil.name, name="b" * 40 + "-0badcafe")
                RESULT["replace"]["seal a symlink"] = "SEALED"
            except Exception as exc:
                RESULT["replace"]["seal a symlink"] = str(exc)
            sealed = tree.parent.parent  # nothing but real directories at the paths a sandbox may bind
            RESULT["sealed symlinks"] = [str(p) for d in (sealed, *(sealed / n for n in os.listdir(sealed)))
                                         if d.is_dir() for p in (d / n for n in os.listdir(d)) if p.is_symlink()]
            victim.start()
            RESULT["exit"] = victim.wait(timeout=60)["StatusCode"]
            RESULT["output"] = victim.logs(stdout=True, stderr=True).decode(errors="replace")
            victim.remove(force=True)
    """,
        sandbox_image=sandbox_image,
    )
    assert set(found["replace"].values()) - {found["replace"]["seal a symlink"]} == {"EACCES"}, found["replace"]
    assert (
        found["replace"]["seal a symlink"].startswith(PREFIX + "snapshots/seal: ")
        and "is not a directory: not sealed" in found["replace"]["seal a symlink"]
    ), found["replace"]
    assert found["sealed symlinks"] == []
    assert found["bind staging"].startswith("403 " + PREFIX) and "in a shape it mounts" in found["bind staging"], found
    assert (
        found["bind inside the snapshot"].startswith("403 " + PREFIX)
        and "in a shape" in found["bind inside the snapshot"]
    )
    output = found["output"]
    assert "README.md" in output and "docker.sock" not in output.replace("/workspace/docker.sock", ""), output
    assert "ApiVersion" not in output, "the sandbox reached the Docker daemon: " + output
    assert "curl-failed-7" in output and "inner-curl-failed-7" in output, output  # no socket there to connect to
    assert Path(found["tree"]).is_dir() and not Path(found["tree"]).is_symlink()


@pytest.mark.parametrize("kind", ["sandbox", "proxy"])
def test_any_user_but_askbox_s_own_is_refused_at_create(seat, sandbox_image, built_images, docker_client, kind):
    """(b) the socket's group (or root's, or a uid alone, or a name) never reaches the daemon."""
    found = as_seat(
        seat,
        """
        from sandbox.allowlist import parse_allowlist, squid_config
        from sandbox.owned_dirs import perform
        docker_gid = ARGS["docker_gid"]
        if ARGS["kind"] == "sandbox":
            users = ["10001:10001", "0:0", f"10001:{docker_gid}", "10001:0", "0:10001", "10001", "root",
                     "askbox", "10001:docker", "10002:10002", f"{docker_gid}:{docker_gid}"]
            make = lambda user: client.containers.create(**sandbox_args(user=user))
        else:
            perform("egress/make", Path(ARGS["egress"]), proxy="5ea7000000ab")  # by the filter: the seat may not
            entries = parse_allowlist("localhost:9")
            users = ["10002:10002", "0:0", f"10002:{docker_gid}", "10002:0", "10002", "10001:10001", "nobody"]
            make = lambda user: client.containers.create(
                ARGS["proxy_image"], user=user, network_mode="host", read_only=True, cap_drop=["ALL"],
                security_opt=["no-new-privileges"], pids_limit=64, mem_limit="64m",
                environment={"ASKBOX_SQUID_CONF": squid_config(entries)},
                labels={"askbox.egress": "5ea7000000ab", "askbox.egress.root": ARGS["egress"], "askbox.attack": ARGS["token"],
                        "askbox.egress.allow": ",".join(map(str, entries))},
                mounts=[Mount("/run/askbox-egress", ARGS["egress"] + "/5ea7000000ab", type="bind")])
        RESULT["users"] = {user: refusal(lambda: make(user)) for user in users}
    """,
        kind=kind,
        docker_gid=DOCKER_GID,
        sandbox_image=sandbox_image,
        proxy_image=built_images["egress-proxy"],
    )
    own, *others = found["users"].items()
    assert own[1] == "ALLOWED", own  # the control: askbox's own user, otherwise the same container
    for user, answer in others:
        assert answer.startswith("403 " + PREFIX + "create.User ") and "exactly" in answer, (user, answer)
    assert docker_client.containers.list(all=True, filters={"label": f"{ATTACK}={TOKEN}"}) == []


def test_exec_in_a_proxy_runs_only_askbox_s_commands_without_environment(seat, built_images, docker_client):
    """(c) LD_PRELOAD (or any variable) would make the allowed ``test`` arbitrary code; the
    allowed commands with other arguments, too. The seat starts its proxy and opens a run
    through the filter (askbox's own execs pass), and may not write the egress root."""
    found = as_seat(
        seat,
        """
        from sandbox.allowlist import parse_allowlist
        from sandbox.egress import EgressProxies
        proxies = EgressProxies(ARGS["proxy_image"], Path(ARGS["egress"]), lock_dir=Path(ARGS["locks"]),
                                deployment=ARGS["deployment"])
        entries = parse_allowlist("localhost:9")
        run_dir = proxies.ensure(client, entries, "seat-run")  # directories by the filter, listen by exec
        RESULT["run dir"] = [str(run_dir), run_dir.stat().st_uid, (run_dir / "proxy.sock").is_socket()]
        RESULT["write egress"] = {
            "mkdir a run": errno_of(lambda: os.mkdir(run_dir.with_name("run-evil"))),
            "replace a run": errno_of(lambda: os.rename(run_dir, run_dir.with_name("aside"))),
            "symlink a proxy": errno_of(lambda: os.symlink("/var/run", Path(ARGS["egress"]) / "0123456789ab")),
        }
        proxy = client.containers.get(proxies._name(proxies._config(client, entries)[1]))
        api = client.api
        RESULT["execs"] = {
            "LD_PRELOAD": refusal(lambda: api.exec_create(proxy.id, ["test", "-s", "/tmp/squid.port"],
                                                          environment={"LD_PRELOAD": "/tmp/x.so"})),
            "PATH": refusal(lambda: api.exec_create(proxy.id, ["test", "-s", "/tmp/squid.port"], environment=["PATH=/tmp"])),
            "workdir": refusal(lambda: api.exec_create(proxy.id, ["test", "-s", "/tmp/squid.port"], workdir="/tmp")),
            "test -e /": refusal(lambda: api.exec_create(proxy.id, ["test", "-e", "/"])),
            "listen elsewhere": refusal(lambda: api.exec_create(proxy.id, ["askbox-egress-listen", "/tmp", "r", "64"])),
            "listen another run": refusal(lambda: api.exec_create(
                proxy.id, ["askbox-egress-listen", "/run/askbox-egress/runs/run-other", "seat-run", "64"])),
            "responder shell": refusal(lambda: api.exec_create(proxy.id, ["askbox-egress-responder", "1", "$(id)", "9"])),
            "user root": refusal(lambda: api.exec_create(proxy.id, ["test", "-s", "/tmp/squid.port"], user="0:0")),
            "docker group": refusal(lambda: api.exec_create(proxy.id, ["test", "-s", "/tmp/squid.port"],
                                                            user="10002:" + str(ARGS["docker_gid"]))),
        }
        RESULT["control"] = proxy.exec_run(["test", "-s", "/tmp/squid.port"]).exit_code
        proxies.close_run(run_dir)  # by the filter too
        RESULT["closed"] = not run_dir.exists()
    """,
        proxy_image=built_images["egress-proxy"],
        docker_gid=DOCKER_GID,
    )
    path, owner, is_socket = found["run dir"]
    assert path.startswith(f"{seat.egress}/") and owner == 10002 and is_socket, found["run dir"]
    assert set(found["write egress"].values()) == {"EACCES"}, found["write egress"]
    for name, answer in found["execs"].items():
        assert answer.startswith("403 " + PREFIX + "exec"), (name, answer)
    assert found["control"] == 0 and found["closed"]


def test_askbox_s_own_run_passes_from_the_seat(seat, sandbox_image, built_images, local_server):  # noqa: F811
    """The control for all of the above: from the same seat a sandbox reads a snapshot the
    filter sealed and reaches an allowlisted server through a proxy whose directories the
    filter made; the snapshot is removed again by the filter when idle."""
    found = as_seat(
        seat,
        """
        from jobs.repos.resolve import RepoRef
        from jobs.repos.snapshot import Snapshots
        from sandbox.egress import EgressProxies
        from sandbox.runner import Sandbox
        from sandbox.spec import Limits, SandboxSpec
        proxies = EgressProxies(ARGS["proxy_image"], Path(ARGS["egress"]), lock_dir=Path(ARGS["locks"]),
                                deployment=ARGS["deployment"])
        box = Sandbox(client, proxies, deployment=ARGS["deployment"])
        store = Snapshots(Path(ARGS["snapshots"]))
        ref = RepoRef(name="own", path=Path(ARGS["repo"]))
        with store.lease(ref, Path(ARGS["repo"]) / ".git", ARGS["commit"]) as tree:
            spec = SandboxSpec(image=ARGS["sandbox_image"], repo=tree, egress_allow=(f"127.0.0.1:{ARGS['port']}",),
                               command=["sh", "-c", f"cat README.md; curl -s -m 10 http://127.0.0.1:{ARGS['port']}/"],
                               limits=Limits(timeout=60), labels={"attack": ARGS["token"]})
            with box.run(spec) as run:
                RESULT["lines"] = [line.text for line in run if line.stream == "stdout"]
            RESULT["outcome"] = run.outcome.kind.value
        RESULT["removed"] = [str(p) for p in store.cleanup(idle=0)]
        RESULT["left"] = tree.exists()
        box.egress.stop_all(client)
    """,
        sandbox_image=sandbox_image,
        proxy_image=built_images["egress-proxy"],
        port=local_server,
    )
    assert found["outcome"] == "ok", found
    assert found["lines"][0] == "# the sealed snapshot" and "hello from the allowlisted server" in found["lines"][1]
    assert found["removed"] and not found["left"]
    log = seat.log.read_text()
    assert "did POST /askbox/snapshots/seal" in log and "did POST /askbox/egress/make" in log
    assert "did POST /askbox/snapshots/remove" in log


def test_the_same_swap_by_root_is_caught_at_start(seat, sandbox_image, built_images, docker_client):
    """(d) The old threat, something that can write the bind roots (here: root), swaps a
    sandbox's snapshot and a proxy's directory for symlinks to /var/run between create and
    start: the filter checks the mounts again at start and refuses (defence in depth)."""
    filtered = docker.DockerClient(base_url=f"unix://{seat.socket}")
    build = seat.snapshots / "staging" / "root-swap-00000000" / ".tmp-root"
    build.mkdir(parents=True)
    name = "c" * 40 + "-0badcafe"
    owned_dirs.seal_snapshot(seat.snapshots, build.parent.name, build.name, name)
    tree = seat.sealed_root() / build.parent.name / name
    run_labels = {
        labels.SANDBOX: DEPLOYMENT,
        labels.RUN_ID: f"root-swap-{TOKEN}",
        labels.OWNER: "h:1:1",
        labels.DEADLINE: str(int(time.time()) + 120),
        ATTACK: TOKEN,
    }
    victim = filtered.containers.create(
        sandbox_image,
        ["sh", "-c", "curl -s -m 5 --unix-socket /workspace/docker.sock http://x/version"],
        user="10001:10001",
        labels=run_labels,
        network_mode="none",
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        ipc_mode="private",
        cgroupns="private",
        pids_limit=64,
        mem_limit="64m",
        nano_cpus=10**9,
        mounts=[Mount("/workspace", str(tree), type="bind", read_only=True)],
    )
    tree.rename(tree.with_name("aside"))
    tree.symlink_to("/var/run")
    try:
        with pytest.raises(APIError) as refused:
            victim.start()
        assert refused.value.status_code == 403 and "start: Mounts: " in str(refused.value.explanation)
        assert "symlink" in str(refused.value.explanation), refused.value.explanation
        assert docker_client.containers.get(victim.id).attrs["State"]["StartedAt"].startswith("0001-")  # never started
    finally:
        tree.unlink()
        tree.with_name("aside").rename(tree)
        victim.remove(force=True)
    # The same for an egress proxy's directory.
    owned_dirs.make_egress_dir(seat.egress, "0000000000ff")
    from sandbox.allowlist import parse_allowlist, squid_config

    entries = parse_allowlist("localhost:9")
    proxy = filtered.containers.create(
        built_images["egress-proxy"],
        user="10002:10002",
        network_mode="host",
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=64,
        mem_limit="64m",
        environment={"ASKBOX_SQUID_CONF": squid_config(entries)},
        labels={
            labels.EGRESS: "0000000000ff",
            labels.EGRESS_ROOT: str(seat.egress),
            labels.EGRESS_ALLOW: "localhost:9",
            ATTACK: TOKEN,
        },
        mounts=[Mount("/run/askbox-egress", str(seat.egress / "0000000000ff"), type="bind")],
    )
    directory = seat.egress / "0000000000ff"
    directory.rename(directory.with_name("aside"))
    directory.symlink_to("/var/run")
    try:
        with pytest.raises(APIError) as refused:
            proxy.start()
        assert refused.value.status_code == 403 and "symlink" in str(refused.value.explanation)
    finally:
        directory.unlink()
        directory.with_name("aside").rename(directory)
        proxy.remove(force=True)


def test_a_worker_that_may_not_write_and_is_not_behind_the_filter_is_told_so(seat):
    """The seat with the real daemon's group instead of the filter: the sealing cannot be
    delegated, and the message says what to do (not a traceback, not 'page not found')."""
    script = seat.base / "home" / "plain.py"
    script.write_text(
        textwrap.dedent("""
        import json, sys
        from pathlib import Path
        from sandbox.owned_dirs import perform
        try:
            perform("snapshots/seal", Path(sys.argv[1]), slug="web-1234abcd", build=".tmp-x", name="d" * 40 + "-0badcafe")
        except Exception as exc:
            print(json.dumps([type(exc).__name__, str(exc)]))
    """)
    )
    (seat.snapshots / "staging" / "web-1234abcd" / ".tmp-x").mkdir(parents=True)
    python, python_env = seat_python()
    done = subprocess.run(
        [*python, str(script), str(seat.snapshots)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**python_env, "PATH": os.environ["PATH"], "DOCKER_HOST": "unix:///var/run/docker.sock"},
        cwd=seat.base / "home",
        user=SEAT_UID,
        group=SEAT_UID,
        extra_groups=[DOCKER_GID],
    )
    kind, message = json.loads(done.stdout.strip().splitlines()[-1])
    assert kind == "SandboxInfraError", (kind, message)
    assert "the Docker endpoint is not askbox docker-filter" in message and "Permission denied" in message, message
    assert not (seat.sealed_root() / "web-1234abcd").exists() or not any(
        (seat.sealed_root() / "web-1234abcd").iterdir()
    )
