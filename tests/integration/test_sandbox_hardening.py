"""What `docker inspect` and the host's `ps` show of a running sandbox, and what the agent
inside can change about its own limits.

A question's prompt and its API key reach the sandbox over stdin (``SandboxSpec.stdin``,
``SandboxSpec.secret_env``), never through argv or the container's environment, which
`docker inspect`, the daemon's config.v2.json on disk and the host's `ps` all show. Each
test here looks for a random marker where an operator (or another local user) would look,
while the sandbox runs, and also proves the answer still arrives.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox import OutcomeKind, SandboxSpec
from sandbox.agents.adapters import CursorAgent
from sandbox.agents.events import Result
from sandbox.agents.session import MAX_PROMPT_BYTES, AgentSession, PromptTooLong
from sandbox.agents.settings import AgentSettings, CursorAgentSettings
from sandbox.container_config import OOM_SCORE_ADJ
from sandbox.spec import Limits
from tests.conftest import REDIS_TEST_URL, sandbox_containers
from tests.fakes.gemini_api import FakeGeminiAPI, Text

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leftovers")]


def host_ps() -> str:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout


def where_visible(docker_client, container_id: str, *markers: str) -> dict[str, list[str]]:
    """Which of the operator's views of a running container show any marker."""
    attrs = docker_client.api.inspect_container(container_id)
    assert attrs["State"]["Running"], "the sandbox ended before it could be looked at"
    ps = host_ps()
    views = {"docker inspect": json.dumps(attrs), "ps -eo args": ps}
    return {marker: [name for name, text in views.items() if marker in text] for marker in markers}


def output(sandbox, spec: SandboxSpec) -> tuple[str, object]:
    with sandbox.run(spec) as run:
        lines = [line.text for line in run if line.stream == "stdout"]
    return "\n".join(lines), run.outcome


# --- the container's configuration ---------------------------------------------------


def test_inspect_of_a_running_sandbox_shows_the_caps_and_nothing_secret(sandbox, sandbox_image, docker_client):
    key = "key-" + secrets.token_hex(8)
    spec = SandboxSpec(
        image=sandbox_image, command=["sleep", "30"], secret_env={"SOME_API_KEY": key}, limits=Limits(timeout=60)
    )
    with sandbox.run(spec) as run:
        attrs = docker_client.api.inspect_container(run.container.id)
        host, config = attrs["HostConfig"], attrs["Config"]
        run.stop()
    assert key not in json.dumps(attrs)
    assert not any(e.startswith("SOME_API_KEY=") for e in config["Env"])
    assert {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]} == {
        "core": (0, 0),
        "nofile": (Limits().nofile, Limits().nofile),
    }
    assert host["ShmSize"] == 16 * 2**20
    assert host["OomScoreAdj"] == OOM_SCORE_ADJ > 0
    assert host["CgroupnsMode"] == "private"
    assert config["Hostname"] == "sandbox"
    # what a careful operator also checks, all at their safe values
    assert host["Privileged"] is False and host["CapAdd"] is None and host["CapDrop"] == ["ALL"]
    assert host["Devices"] in ([], None) and host["DeviceCgroupRules"] is None
    assert not host.get("Sysctls") and host["PortBindings"] in ({}, None) and host["Binds"] is None
    assert host["NetworkMode"] == "none" and host["PidMode"] == "" and host["UTSMode"] == ""
    assert host["IpcMode"] == "private" and host["UsernsMode"] == ""
    assert host["ReadonlyRootfs"] is True and "no-new-privileges" in host["SecurityOpt"]
    assert "/proc/kcore" in host["MaskedPaths"] and "/proc/sys" in host["ReadonlyPaths"]
    assert [m["Destination"] for m in attrs["Mounts"]] == ["/etc/resolv.conf"]  # nothing else of the host's


ATTEMPTS = r"""
echo "core=$(ulimit -c)"
(ulimit -c unlimited) 2>/dev/null && echo "raised core" || echo "core stays 0"
echo "nofile=$(ulimit -n)"
(ulimit -n 65536) 2>/dev/null && echo "raised nofile" || echo "nofile stays"
echo -1000 2>/dev/null > /proc/self/oom_score_adj && echo "lowered oom score" || echo "oom score stays $(cat /proc/self/oom_score_adj)"
dd if=/dev/zero of=/dev/shm/fill bs=1M count=32 2>/dev/null; echo "shm took $(du -m /dev/shm/fill | cut -f1) MiB"
echo "resolv=[$(cat /etc/resolv.conf)]"
echo "cgroup=$(grep -c docker /proc/self/cgroup)"
echo "hostname=$(hostname)"
"""


def test_agent_cannot_lift_its_limits_or_read_host_details(sandbox, sandbox_image):
    text, outcome = output(sandbox, SandboxSpec(image=sandbox_image, command=["sh", "-c", ATTEMPTS]))
    assert outcome.kind is OutcomeKind.OK, outcome
    got = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert got["core"] == "0" and "core stays 0" in text  # no core dump of a process holding a key
    assert got["nofile"] == str(Limits().nofile) and "nofile stays" in text
    assert f"oom score stays {OOM_SCORE_ADJ}" in text
    assert "shm took 16 MiB" in text  # /dev/shm is full at 16 MiB, not Docker's 64
    assert got["resolv"] == "[]"  # not the host's resolvers and search domains
    assert got["cgroup"] == "0"  # no /docker/<container id> paths of the host's hierarchy
    assert got["hostname"] == "sandbox"


# --- stdin: prompts and keys ---------------------------------------------------------


def test_secret_env_and_stdin_arrive_byte_for_byte(sandbox, sandbox_image):
    key = "a b $HOME \"q\" 'x' \\n =tail " + secrets.token_hex(4)
    payload = os.urandom(3 * 2**20)  # far over the old argv limit and the pipe's buffer
    spec = SandboxSpec(
        image=sandbox_image,
        command=["sh", "-c", 'printf "%s\\n" "$KEY"; sha256sum'],
        secret_env={"KEY": key},
        stdin=payload,
    )
    text, outcome = output(sandbox, spec)
    assert outcome.kind is OutcomeKind.OK, outcome
    assert text.splitlines()[0] == key
    assert text.splitlines()[1].split()[0] == hashlib.sha256(payload).hexdigest()


def test_a_command_that_never_reads_stdin_is_not_held_up(sandbox, sandbox_image):
    started = time.monotonic()
    spec = SandboxSpec(image=sandbox_image, command=["echo", "done"], stdin=b"x" * 8 * 2**20)
    text, outcome = output(sandbox, spec)
    assert outcome.kind is OutcomeKind.OK and text == "done"
    assert time.monotonic() - started < 15


def test_prompt_over_the_cap_is_refused_clearly(sandbox, cursor_standin_image):
    agent = CursorAgent(AgentSettings(cursor=CursorAgentSettings(api_key="k", image=cursor_standin_image)))
    with pytest.raises(PromptTooLong, match=r"the prompt is 1,048,577 bytes; the limit is 1,048,576"):
        AgentSession(sandbox, agent, "x" * (MAX_PROMPT_BYTES + 1))


def test_cursor_prompt_and_key_show_in_neither_inspect_nor_ps(sandbox, cursor_standin_image, docker_client, repo):
    marker, key = "marker-" + secrets.token_hex(8), "cursor-key-" + secrets.token_hex(8)
    agent = CursorAgent(AgentSettings(cursor=CursorAgentSettings(api_key=key, image=cursor_standin_image)))
    # 200 KiB: argv refused it before (MAX_ARG_STRLEN); direct-sleep runs for seconds
    prompt = f"[transcript:direct-sleep] {marker} " + "y" * 200 * 1024
    session = AgentSession(sandbox, agent, prompt, repo=repo, egress_allow=(), limits=Limits(timeout=60))
    seen = None
    events = []
    for event in session.events():
        events.append(event)
        if seen is None:
            seen = where_visible(docker_client, session.run.container.id, marker, key, "cursor-agent")
    assert seen == {marker: [], key: [], "cursor-agent": ["docker inspect", "ps -eo args"]}
    assert isinstance(events[-1], Result), events[-2:]  # the key authenticated, the prompt arrived


def test_gemini_prompt_and_token_show_in_neither_inspect_nor_ps(
    repo, built_images, egress_root, gateway, docker_client
):
    key, marker = "key-" + secrets.token_hex(8), "marker-" + secrets.token_hex(8)
    with FakeGeminiAPI(expected_key=key) as api:
        api.script(Text("the answer is 42", chunks=4, delay=1.0))  # keeps the CLI running for seconds
        proxy = gateway(api.base_url, REDIS_TEST_URL, keys=(key,))
        env = {
            **os.environ,
            "ASKBOX_GATEWAY_SOCKET_DIR": str(proxy.socket_dir),
            "ASKBOX_EGRESS_SOCKET_DIR": str(egress_root),
            "ASKBOX_REDIS_URL": REDIS_TEST_URL,
        }
        askbox = Path(sys.executable).parent / "askbox"
        cli = subprocess.Popen(
            [askbox, "ask", "--inline", "--agent", "gemini", "--repo", repo, f"Say {marker}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            seen = None
            deadline = time.monotonic() + 60
            while seen is None and time.monotonic() < deadline and cli.poll() is None:
                running = [c for c in sandbox_containers(docker_client) if c.attrs["State"] == "running"]
                if running and api.generate_requests:  # the CLI read its prompt, waits on the model
                    token = _key_inside(docker_client, running[0].id)
                    assert token, "the agent has no key at all"
                    seen = where_visible(docker_client, running[0].id, marker, token, "gemini")
                time.sleep(0.1)
            stdout, stderr = cli.communicate(timeout=120)
        finally:
            cli.kill()
    assert seen is not None, "never saw the sandbox running"
    assert seen[marker] == [] and seen[token] == [], seen
    assert seen["gemini"] == ["docker inspect", "ps -eo args"]
    assert cli.returncode == 0, stderr
    assert "the answer is 42" in stdout
    assert marker in api.requests[0].text()  # the prompt reached the model intact, through stdin


def _key_inside(docker_client, container_id: str) -> str:
    """The GEMINI_API_KEY the agent's processes really have (what it sees itself), read from inside."""
    script = "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -m1 '^GEMINI_API_KEY='"
    run = docker_client.api.exec_create(container_id, ["sh", "-c", script])
    return docker_client.api.exec_start(run["Id"]).decode().strip().partition("=")[2]
