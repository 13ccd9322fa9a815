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
    return Policy(deployment="prod", image_prefixes=("askbox/",), egress_image="askbox/egress-proxy",
                  egress_dirs=(str(tmp_path / "egress"),), read_only_dirs=(str(tmp_path / "repos"),))


def body(policy: Policy, **host: object) -> dict:
    return {
        "Image": "askbox/sandbox:1", "Cmd": ["true"], "User": "10001:10001",
        "Labels": {"askbox.sandbox": "prod", "askbox.run": "r", "askbox.owner": "h:1:2", "askbox.deadline": "9"},
        "HostConfig": {"NetworkMode": "none", "ReadonlyRootfs": True, "CapDrop": ["ALL"],
                       "SecurityOpt": ["no-new-privileges"], "IpcMode": "private", "CgroupnsMode": "private",
                       "Memory": 1 << 26, "PidsLimit": 64, "NanoCpus": 10**9,
                       "Mounts": [{"Type": "bind", "Source": f"{policy.read_only_dirs[0]}/web", "Target": "/workspace",
                                   "ReadOnly": True}], **host},
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
        assert decision.hijack and decision.exec_id == exec_id and json.loads(decision.body) == json.loads(sent or b"{}")
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
        Policy(deployment="d", image_prefixes=("askbox/",), egress_image="askbox/egress-proxy",
               egress_dirs=("/run/askbox/egress",), read_only_dirs=("/",))


def _filter(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ASKBOX_")}
    return subprocess.run([ASKBOX, "docker-filter"], env={**clean, **env}, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_a_bad_setting_stops_the_filter_naming_its_variable(tmp_path):
    done = _filter(tmp_path, ASKBOX_DOCKER_FILTER_ALLOW_BINDS="/srv/repos,/")
    assert done.returncode == 2 and "invalid ASKBOX_DOCKER_FILTER_ALLOW_BINDS" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    done = _filter(tmp_path, ASKBOX_DOCKER_FILTER_SOCKET=str(tmp_path / ("x" * 120) / "docker.sock"))
    assert done.returncode == 1 and "askbox docker-filter: cannot listen on" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_daemon_that_is_down_is_reported_as_such(tmp_path):
    import socket
    import time

    import h11

    sock = tmp_path / "f.sock"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ASKBOX_")}
    proc = subprocess.Popen([ASKBOX, "docker-filter"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**clean, "ASKBOX_DOCKER_FILTER_SOCKET": str(sock),
                                 "ASKBOX_DOCKER_FILTER_UPSTREAM": str(tmp_path / "no-daemon.sock")})
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the filter did not start"
            time.sleep(0.05)
        for request in (b"GET /v1.41/_ping HTTP/1.1\r\nHost: d\r\n\r\n",  # forwarded
                        b"GET /v1.41/containers/abc/json HTTP/1.1\r\nHost: d\r\n\r\n"):  # looked up first
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
    probe = ("import sys, sandbox.docker_filter.proxy, sandbox.docker_filter.settings; "
             "print(sorted(m for m in sys.modules if m == 'docker' or m.startswith('docker.')))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
