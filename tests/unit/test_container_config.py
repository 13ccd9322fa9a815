"""The sandbox policy (README "The sandbox policy"), read off the one configuration a run
gets (sandbox/container_config.py), with no Docker: every promise of the policy is a line
here. The integration tests (test_sandbox_isolation.py, test_sandbox_hardening.py) prove
the same promises from inside real containers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import labels
from sandbox.bridges import SocketBridge
from sandbox.container_config import EMPTY_FILE, OOM_SCORE_ADJ, container_config, stdin_payload
from sandbox.spec import HOME, WORKSPACE, Limits, Masks, SandboxSpec


@pytest.fixture()
def spec(tmp_path: Path) -> SandboxSpec:
    repo = tmp_path / "repo"
    (repo / "secrets").mkdir(parents=True)
    (repo / ".env").write_text("X=1\n")
    bridge_dir = tmp_path / "gw"
    bridge_dir.mkdir()
    return SandboxSpec(
        image="askbox/agent-gemini:1",
        command=["gemini", "-p"],
        repo=repo,
        masks=Masks(files=(".env",), dirs=("secrets",)),
        env={"VISIBLE": "1"},
        secret_env={"GEMINI_API_KEY": "token"},
        stdin=b"the prompt",
        limits=Limits(memory="1g", cpus=0.5, pids=64, tmpfs="64m", timeout=30),
        bridges=(
            SocketBridge(host_dir=bridge_dir, socket="gateway.sock", port=8080, mount_point="/run/askbox-gateway"),
        ),
        run_id="run1",
        labels={"job": "j1"},
    )


def config(spec: SandboxSpec, egress: Path | None = None) -> dict:
    return container_config(spec, egress_dir=egress, deployment="prod", owner="host:1:2", deadline=1000.4)


def test_no_network_no_privilege_read_only(spec: SandboxSpec) -> None:
    c = config(spec)
    assert c["network_mode"] == "none"
    assert c["read_only"] is True
    assert c["cap_drop"] == ["ALL"] and "cap_add" not in c
    assert c["security_opt"] == ["no-new-privileges"]
    assert c["user"] == "10001:10001"
    assert "privileged" not in c and "devices" not in c and "volumes" not in c
    assert c["init"] is True and c["ipc_mode"] == "private" and c["cgroupns"] == "private"
    assert c["hostname"] == "sandbox"


def test_every_mount_is_a_read_only_bind(spec: SandboxSpec) -> None:
    mounts = config(spec)["mounts"]
    assert all(m["Type"] == "bind" and m["ReadOnly"] is True for m in mounts)
    by_target = {m["Target"]: m["Source"] for m in mounts}
    assert by_target[WORKSPACE] == str(spec.repo)
    assert by_target["/etc/resolv.conf"] == EMPTY_FILE  # no DNS
    assert by_target[f"{WORKSPACE}/.env"] == EMPTY_FILE  # a secret file masked
    assert by_target["/run/askbox-gateway"] == str(spec.bridges[0].host_dir)


def test_writable_places_are_size_capped_tmpfs(spec: SandboxSpec) -> None:
    tmpfs = config(spec)["tmpfs"]
    assert set(tmpfs) == {"/tmp", HOME, f"{WORKSPACE}/secrets"}
    for options in (tmpfs["/tmp"], tmpfs[HOME]):
        assert {"nosuid", "nodev", f"size={64 << 20}"} <= set(options.split(","))
    assert tmpfs[HOME].endswith("uid=10001,gid=10001") and "mode=0700" in tmpfs[HOME]
    assert set(tmpfs[f"{WORKSPACE}/secrets"].split(",")) >= {"ro", "noexec", "nosuid", "nodev"}


def test_limits(spec: SandboxSpec) -> None:
    c = config(spec)
    assert c["mem_limit"] == c["memswap_limit"] == 1 << 30  # no swap beyond memory
    assert c["nano_cpus"] == 500_000_000
    assert c["pids_limit"] == 64
    assert {u["Name"]: (u["Soft"], u["Hard"]) for u in c["ulimits"]}["core"] == (0, 0)
    assert c["oom_score_adj"] == OOM_SCORE_ADJ > 0
    assert c["log_config"]["Config"]["max-file"] == "1"


def test_secrets_and_the_prompt_go_on_stdin_never_in_the_config(spec: SandboxSpec) -> None:
    c = config(spec)
    visible = repr({k: v for k, v in c.items() if k != "mounts"})
    assert "token" not in visible and "the prompt" not in visible
    assert c["environment"]["VISIBLE"] == "1" and "GEMINI_API_KEY" not in c["environment"]
    assert c["stdin_open"] is True
    assert stdin_payload(spec) == b"GEMINI_API_KEY=token\n\nthe prompt"


def test_labels_name_the_run_for_the_reaper(spec: SandboxSpec) -> None:
    found = config(spec)["labels"]
    assert found[labels.SANDBOX] == "prod" and found[labels.RUN_ID] == "run1"
    assert found[labels.OWNER] == "host:1:2" and found[labels.DEADLINE] == "1001"
    assert found[labels.PREFIX + "job"] == "j1"


def test_egress_is_a_bridged_socket_directory_and_proxy_variables(spec: SandboxSpec, tmp_path: Path) -> None:
    egress = tmp_path / "egress-run"
    egress.mkdir()
    c = config(spec, egress)
    assert {m["Target"]: m["Source"] for m in c["mounts"]}["/run/askbox-egress"] == str(egress)
    assert c["environment"]["HTTPS_PROXY"].startswith("http://127.0.0.1:")
    assert c["network_mode"] == "none"  # still: the proxy is reached through the socket only
