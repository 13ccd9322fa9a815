"""The docker-filter's policy on its own (no daemon): how it reads paths, queries and JSON
the way the daemon would, and its settings. The attacks against the real daemon are in
tests/integration/test_docker_filter.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.docker_filter.policy import Policy, Refused, decide, target_kind

ROOT = Path(__file__).resolve().parents[2]
ASKBOX = str(Path(sys.executable).parent / "askbox")


@pytest.fixture()
def policy(tmp_path: Path) -> Policy:
    (tmp_path / "repos" / "web").mkdir(parents=True)
    (tmp_path / "egress").mkdir()
    return Policy(
        deployment="prod",
        image_prefixes=("askbox/",),
        egress_image="askbox/egress-proxy",
        egress_dirs=(str(tmp_path / "egress"),),
        read_only_dirs=(str(tmp_path / "repos"),),
    )


def body(policy: Policy, **host: object) -> dict:
    return {
        "Image": "askbox/sandbox:1",
        "Cmd": ["true"],
        "User": "10001:10001",
        "Labels": {"askbox.sandbox": "prod", "askbox.run": "r", "askbox.owner": "h:1:2", "askbox.deadline": "9"},
        "HostConfig": {
            "NetworkMode": "none",
            "ReadonlyRootfs": True,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "IpcMode": "private",
            "CgroupnsMode": "private",
            "Memory": 1 << 26,
            "PidsLimit": 64,
            "NanoCpus": 10**9,
            "Mounts": [
                {"Type": "bind", "Source": f"{policy.read_only_dirs[0]}/web", "Target": "/workspace", "ReadOnly": True}
            ],
            **host,
        },
    }


def create(policy: Policy, payload: dict | str, target: str = "/v1.41/containers/create"):
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    return decide(policy, "POST", target, raw.encode())


def test_the_control_body_passes_and_is_forwarded_as_parsed(policy):
    decision = create(policy, body(policy))
    assert json.loads(decision.body) == body(policy) and decision.target() == "/v1.41/containers/create"


@pytest.mark.parametrize("key", ["privileged", "PRIVILEGED", "pRiViLeGeD"])
def test_field_names_match_ignoring_case_as_in_go(policy, key):
    with pytest.raises(Refused, match="Privileged is not allowed"):
        create(policy, body(policy, **{key: True}))


def test_unicode_folding_keys_are_refused(policy):
    # Go's encoding/json folds U+212A KELVIN SIGN to k and U+017F LONG S to s.
    for key in ("Networ\u212aMode", "\u017fecurityOpt"):
        with pytest.raises(Refused, match="not ASCII"):
            create(policy, body(policy, **{key: "host"}))


def test_unknown_fields_must_be_empty(policy):
    assert create(policy, body(policy, SomeFutureField=None))
    with pytest.raises(Refused, match="SomeFutureField is not allowed"):
        create(policy, body(policy, SomeFutureField={"x": 1}))


def test_queries_are_re_encoded_from_what_was_checked(policy):
    decision = create(policy, body(policy), "/containers/create?name=askbox-x%2Dy")
    assert decision.query == "name=askbox-x-y"
    with pytest.raises(Refused, match="malformed"):
        create(policy, body(policy), "/containers/create?name=askbox-x%zz")


def test_listings_need_an_askbox_label_filter(policy):
    for filters in ({"label": ["askbox.sandbox=prod"]}, {"label": {"askbox.run": True}}):
        assert decide(policy, "GET", "/containers/json?filters=" + json.dumps(filters), b"")
    for filters in ({}, {"label": ["other=1"]}, {"name": ["askbox."]}, {"label": {"askbox.run": False}}):
        with pytest.raises(Refused, match="askbox"):
            decide(policy, "GET", "/containers/json?filters=" + json.dumps(filters), b"")


def test_exec_start_is_checked_and_forwarded_with_a_json_body(policy):
    exec_id = "a" * 64
    for sent in (b"", b'{"Detach": false, "Tty": false}'):
        decision = decide(policy, "POST", f"/v1.41/exec/{exec_id}/start", sent)
        assert (
            decision.hijack and decision.exec_id == exec_id and json.loads(decision.body) == json.loads(sent or b"{}")
        )
    with pytest.raises(Refused, match="detached"):
        decide(policy, "POST", f"/v1.41/exec/{exec_id}/start", b'{"Detach": true}')
    with pytest.raises(Refused, match="full exec id"):
        decide(policy, "POST", "/v1.41/exec/abc/start", b"")


def test_targets_are_this_deployment_s_own(policy):
    assert target_kind(policy, {"askbox.sandbox": "prod"}) == "sandbox"
    assert target_kind(policy, {"askbox.egress": "x", "askbox.egress.root": policy.egress_dirs[0]}) == "egress"
    assert target_kind(policy, {"askbox.sandbox": "staging"}) is None
    assert target_kind(policy, {"askbox.egress": "x", "askbox.egress.root": "/elsewhere"}) is None
    assert target_kind(policy, None) is None


def test_a_bind_prefix_of_root_is_refused():
    with pytest.raises(ValueError, match="other than /"):
        Policy(
            deployment="d",
            image_prefixes=("askbox/",),
            egress_image="askbox/egress-proxy",
            egress_dirs=("/run/askbox/egress",),
            read_only_dirs=("/",),
        )


def _filter(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ASKBOX_")}
    return subprocess.run(
        [ASKBOX, "docker-filter"], env={**clean, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_a_bad_setting_stops_the_filter_naming_its_variable(tmp_path):
    done = _filter(tmp_path, ASKBOX_DOCKER_FILTER_ALLOW_BINDS="/srv/repos,/")
    assert done.returncode == 2 and "invalid ASKBOX_DOCKER_FILTER_ALLOW_BINDS" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    done = _filter(tmp_path, ASKBOX_DOCKER_FILTER_SOCKET=str(tmp_path / ("x" * 120) / "docker.sock"))
    assert done.returncode == 1 and "askbox docker-filter: cannot listen on" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_bind_directory_overlapping_the_snapshots_stops_the_filter(tmp_path):
    done = _filter(
        tmp_path,
        ASKBOX_DOCKER_FILTER_ALLOW_BINDS=str(tmp_path),
        ASKBOX_REPO_SNAPSHOTS=str(tmp_path / "snaps"),
        ASKBOX_DOCKER_FILTER_SOCKET=str(tmp_path / "f.sock"),
    )
    assert done.returncode == 2 and "askbox docker-filter not started: " in done.stderr, done.stderr
    assert f"{tmp_path} (a directory sandboxes may bind anything below) overlaps {tmp_path}/snaps" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_daemon_that_is_down_is_reported_as_such(tmp_path):
    import socket
    import time

    import h11

    sock = tmp_path / "f.sock"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ASKBOX_")}
    proc = subprocess.Popen(
        [ASKBOX, "docker-filter"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={
            **clean,
            "ASKBOX_DOCKER_FILTER_SOCKET": str(sock),
            "ASKBOX_DOCKER_FILTER_UPSTREAM": str(tmp_path / "no-daemon.sock"),
        },
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the filter did not start"
            time.sleep(0.05)
        for request in (
            b"GET /v1.41/_ping HTTP/1.1\r\nHost: d\r\n\r\n",  # forwarded
            b"GET /v1.41/containers/abc/json HTTP/1.1\r\nHost: d\r\n\r\n",
        ):  # looked up first
            with socket.socket(socket.AF_UNIX) as conn:
                conn.settimeout(10)
                conn.connect(str(sock))
                conn.sendall(request)
                received = b"".join(iter(lambda: conn.recv(65536), b""))
            client = h11.Connection(h11.CLIENT)
            client.send(h11.Request(method="GET", target="/", headers=[("Host", "d")]))
            client.receive_data(received)
            response, data = client.next_event(), client.next_event()
            assert response.status_code == 502, received
            message = json.loads(data.data)["message"]
            assert message.startswith("the Docker daemon behind askbox docker-filter is not reachable at "), message
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_filter_does_not_load_docker_py():
    # It speaks HTTP itself (h11, aiohttp): a filter that loaded docker-py would be one
    # more place that can reach the real daemon by accident.
    probe = (
        "import sys, sandbox.docker_filter.proxy, sandbox.docker_filter.settings; "
        "print(sorted(m for m in sys.modules if m == 'docker' or m.startswith('docker.')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


# -- issue 17: users, exec, bind shapes, the start ---------------------------------------

from sandbox.allowlist import parse_allowlist, squid_config  # noqa: E402
from sandbox.docker_filter.policy import check_at_start  # noqa: E402

PROXY = "0123456789ab"
EXEC = "/v1.41/containers/askbox-egress-x/exec"


@pytest.fixture()
def full(tmp_path: Path) -> Policy:
    """A policy with every kind of directory askbox binds, each made as askbox makes it."""
    for sub in (
        "repos/web",
        "snapshots/sealed/web-1234abcd/" + "a" * 40 + "-0badcafe",
        "snapshots/staging/web-1234abcd/x",
        "gateway/s-0123456789abcdef",
        f"egress/{PROXY}/runs/run-r1",
    ):
        (tmp_path / sub).mkdir(parents=True)
    return Policy(
        deployment="prod",
        image_prefixes=("askbox/",),
        egress_image="askbox/egress-proxy",
        egress_dirs=(str(tmp_path / "egress"),),
        read_only_dirs=(str(tmp_path / "repos"),),
        snapshot_dirs=(str(tmp_path / "snapshots"),),
        gateway_dirs=(str(tmp_path / "gateway"),),
    )


def sealed_snapshot(policy: Policy) -> str:
    return f"{policy.snapshot_dirs[0]}/sealed/web-1234abcd/{'a' * 40}-0badcafe"


def mount(source: str, target: str = "/workspace", read_only: bool = True) -> dict:
    return {"Type": "bind", "Source": source, "Target": target, "ReadOnly": read_only}


def proxy_body(policy: Policy, **change: object) -> dict:
    entries = parse_allowlist("localhost:9,*.example.com")
    allow = ",".join(map(str, entries))
    config = {
        "Image": "askbox/egress-proxy:1",
        "User": "10002:10002",
        "Env": ["ASKBOX_SQUID_CONF=" + squid_config(entries, max_connections=64)],
        "Labels": {"askbox.egress": PROXY, "askbox.egress.root": policy.egress_dirs[0], "askbox.egress.allow": allow},
        "HostConfig": {
            "NetworkMode": "host",
            "ReadonlyRootfs": True,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "Memory": 1 << 29,
            "PidsLimit": 8192,
            "Mounts": [mount(f"{policy.egress_dirs[0]}/{PROXY}", "/run/askbox-egress", read_only=False)],
        },
    }
    config.update(change)
    return config


@pytest.mark.parametrize(
    "user",
    [
        "0:0",
        "10001:0",
        "10001:112",
        "10001:10002",
        "10002:10002",
        "10001",
        "root",
        "askbox",
        "10001:askbox",
        "1000:1000",
        "",
        " 10001:10001",
    ],
)
def test_a_sandbox_runs_as_10001_10001_exactly(full, user):
    assert create(full, body(full))  # the control: 10001:10001
    with pytest.raises(Refused, match=r"User .* runs as 10001:10001 exactly"):
        create(full, body(full) | {"User": user})


@pytest.mark.parametrize("user", ["0:0", "10002:0", "10002:112", "10002:10001", "10001:10001", "10002", "nobody"])
def test_a_proxy_runs_as_10002_10002_exactly(full, user):
    assert create(full, proxy_body(full))  # the control
    with pytest.raises(Refused, match=r"User .* runs as 10002:10002 exactly"):
        create(full, proxy_body(full, User=user))


def test_supplementary_groups_are_refused(full):
    for groups in (["112"], ["docker"], [0]):
        with pytest.raises(Refused, match="GroupAdd is not allowed"):
            create(full, body(full, GroupAdd=groups))


def test_a_proxy_gets_its_own_squid_conf_and_no_other_variable(full):
    conf = proxy_body(full)["Env"][0]
    for env in ([conf, "LD_PRELOAD=/run/askbox-egress/x.so"], ["LD_PRELOAD=/x.so", conf], [], ["ASKBOX_SQUID_CONF"]):
        with pytest.raises(Refused, match=r"ASKBOX_SQUID_CONF=<its squid.conf> and nothing else"):
            create(full, proxy_body(full, Env=env))
    # Squid runs the programs its configuration names: only askbox's own text, for the label's allowlist.
    for tampered in (
        conf + "url_rewrite_program /bin/sh -c id\n",
        conf.replace("askbox-egress-client", "askbox-egress-client-x"),
        conf.replace("http_access deny all", "http_access allow all"),
    ):
        with pytest.raises(Refused, match=r"not the squid.conf askbox writes"):
            create(full, proxy_body(full, Env=[tampered]))
    other = proxy_body(full)
    other["Labels"]["askbox.egress.allow"] = "localhost:10"  # a conf made for another allowlist
    with pytest.raises(Refused, match=r"not the squid.conf askbox writes"):
        create(full, other)


def test_sandboxes_bind_only_the_shapes_askbox_makes(full, tmp_path):
    ok = [
        sealed_snapshot(full),
        f"{full.gateway_dirs[0]}/s-0123456789abcdef",
        f"{full.egress_dirs[0]}/{PROXY}/runs/run-r1",
        f"{full.read_only_dirs[0]}/web",
    ]
    for source in ok:
        assert create(full, body(full, Mounts=[mount(source)])), source
    refused = [
        f"{full.snapshot_dirs[0]}/staging/web-1234abcd/x",  # the worker's staging area
        f"{full.snapshot_dirs[0]}/staging",
        full.snapshot_dirs[0],
        f"{full.snapshot_dirs[0]}/sealed",
        f"{full.snapshot_dirs[0]}/sealed/web-1234abcd",  # a repository's every snapshot
        f"{sealed_snapshot(full)}/src",  # inside one: its contents are the worker's build
        f"{full.snapshot_dirs[0]}/sealed/.incoming/{'a' * 40}-0badcafe",
        full.gateway_dirs[0],
        f"{full.gateway_dirs[0]}/s-0123456789abcdef/x",
        full.egress_dirs[0],
        f"{full.egress_dirs[0]}/{PROXY}",
        f"{full.egress_dirs[0]}/{PROXY}/runs",
        f"{full.egress_dirs[0]}/xyz/runs/run-r1",
    ]
    for source in refused:
        with pytest.raises(Refused, match="not under a directory askbox mounts, in a shape"):
            create(full, body(full, Mounts=[mount(source)]))


def test_a_proxy_binds_only_its_own_directory_under_the_egress_root(full):
    for source in (
        full.egress_dirs[0],
        f"{full.egress_dirs[0]}/{PROXY}/runs/run-r1",
        f"{full.read_only_dirs[0]}/web",
        sealed_snapshot(full),
    ):
        with pytest.raises(Refused, match="not under a directory askbox mounts"):
            create(
                full,
                proxy_body(full)
                | {
                    "HostConfig": proxy_body(full)["HostConfig"]
                    | {"Mounts": [mount(source, "/run/askbox-egress", read_only=False)]}
                },
            )


def test_a_symlink_anywhere_on_the_way_is_refused(full, tmp_path):
    snapshot = Path(sealed_snapshot(full))
    snapshot.rename(snapshot.with_name("aside"))
    snapshot.symlink_to("/var/run")
    with pytest.raises(Refused, match="symlink"):
        create(full, body(full, Mounts=[mount(str(snapshot))]))
    snapshot.unlink()
    slug = snapshot.parent
    slug.rename(slug.with_name("real"))
    slug.symlink_to(slug.with_name("real"))  # a parent: the same snapshot, reached through a link
    (slug.with_name("real") / "aside").rename(slug.with_name("real") / snapshot.name)
    with pytest.raises(Refused, match="symlink"):
        create(full, body(full, Mounts=[mount(str(snapshot))]))


@pytest.mark.parametrize("overlap", ["snapshots", "snapshots/staging", "gateway/s-1", "egress", "."])
def test_repository_directories_may_not_overlap_what_the_filter_owns(tmp_path, overlap):
    with pytest.raises(ValueError, match="overlaps"):
        Policy(
            deployment="d",
            image_prefixes=("askbox/",),
            egress_image="askbox/egress-proxy",
            egress_dirs=(str(tmp_path / "egress"),),
            snapshot_dirs=(str(tmp_path / "snapshots"),),
            gateway_dirs=(str(tmp_path / "gateway"),),
            read_only_dirs=(os.path.normpath(tmp_path / overlap),),
        )


def exec_body(command: list[str], **fields: object) -> bytes:
    return json.dumps({"AttachStdout": True, "Cmd": command, "Env": None, "User": "", **fields}).encode()


ALLOWED_EXECS = [
    ["test", "-s", "/tmp/squid.port"],
    ["askbox-egress-listen", "/run/askbox-egress/runs/run-abc.1_2", "abc.1_2", "64"],
    ["askbox-egress-responder", "20000", "f00d", "90"],
]


@pytest.mark.parametrize("command", ALLOWED_EXECS)
def test_askbox_s_own_execs_pass(full, command):
    for user in ("", "10002:10002"):
        decision = decide(full, "POST", EXEC, exec_body(command, User=user))
        assert decision.exec_only_egress and json.loads(decision.body)["Cmd"] == command


@pytest.mark.parametrize(
    "command",
    [
        ["test", "-e", "/"],
        ["test", "-s", "/etc/shadow"],
        ["test"],
        ["test", "-s", "/tmp/squid.port", "-o", "x"],
        ["askbox-egress-listen", "/tmp", "r1", "64"],
        ["askbox-egress-listen", "/run/askbox-egress/runs/run-r2", "r1", "64"],  # another run's directory
        ["askbox-egress-listen", "/run/askbox-egress/runs/run-../..", "../..", "64"],
        ["askbox-egress-listen", "/run/askbox-egress/runs/run-r1", "r1", "0"],
        ["askbox-egress-listen", "/run/askbox-egress/runs/run-r1", "r1", "65536"],
        ["askbox-egress-listen", "/run/askbox-egress/runs/run-r1", "r1"],
        ["askbox-egress-responder", "0", "t", "9"],
        ["askbox-egress-responder", "70000", "t", "9"],
        ["askbox-egress-responder", "2000", "t;id", "9"],
        ["askbox-egress-responder", "2000", "t", "99999"],
        ["askbox-egress-responder", "2000", "t", "9", "x"],
    ],
)
def test_allowed_commands_with_other_arguments_are_refused(full, command):
    with pytest.raises(Refused, match="not in the shape askbox runs it"):
        decide(full, "POST", EXEC, exec_body(command))


def test_exec_takes_no_environment_no_directory_and_only_the_proxy_s_user(full):
    command = ALLOWED_EXECS[0]
    for env in (["LD_PRELOAD=/tmp/x.so"], ["PATH=/tmp"], {"LD_PRELOAD": "/x"}):
        with pytest.raises(Refused, match=r"exec.Env is not allowed"):
            decide(full, "POST", EXEC, exec_body(command, Env=env))
    with pytest.raises(Refused, match=r"exec.WorkingDir is not allowed"):
        decide(full, "POST", EXEC, exec_body(command, WorkingDir="/tmp"))
    for user in ("0", "0:0", "10001:10001", "10002:0", "10002:112", "10002", "root"):
        with pytest.raises(Refused, match=r"exec.User"):
            decide(full, "POST", EXEC, exec_body(command, User=user))


def test_container_start_is_rechecked(full):
    decision = decide(full, "POST", "/v1.41/containers/askbox-x/start", b"")
    assert decision.recheck_mounts and decision.container == "askbox-x"
    assert not decide(full, "POST", "/v1.41/containers/askbox-x/kill", b"").recheck_mounts


def inspect(policy: Policy, source: str, **config: object) -> dict:
    """The parts of the daemon's inspect of a created sandbox that the start check reads."""
    labels = {"askbox.sandbox": "prod", "askbox.run": "r", "askbox.owner": "h:1:2", "askbox.deadline": "9"}
    return {
        "Config": {"User": "10001:10001", "Labels": labels, **config},
        "HostConfig": {"Binds": None, "Mounts": [mount("/dev/null", "/etc/resolv.conf"), mount(source)]},
    }


def test_the_start_check_refuses_a_source_replaced_since_the_create(full):
    source = sealed_snapshot(full)
    check_at_start(full, inspect(full, source))  # the control: as created
    Path(source).rename(Path(source).with_name("aside"))
    Path(source).symlink_to("/var/run")  # the swap, done by whoever could
    with pytest.raises(Refused, match=r"start: Mounts: .* symlink"):
        check_at_start(full, inspect(full, source))
    Path(source).unlink()
    with pytest.raises(Refused, match="not visible to the filter"):
        check_at_start(full, inspect(full, source))
    Path(source).with_name("aside").rename(source)
    for config in ({"User": "10001:112"}, {"Labels": {"askbox.sandbox": "someone-else"}}):
        with pytest.raises(Refused):
            check_at_start(full, inspect(full, source, **config))
    binds = inspect(full, source)
    binds["HostConfig"]["Binds"] = ["/var/run:/workspace"]
    with pytest.raises(Refused, match="Binds"):
        check_at_start(full, binds)
