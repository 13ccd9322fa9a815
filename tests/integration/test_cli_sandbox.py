"""`askbox sandbox run` as a user runs it: output streams, exit codes follow the outcome."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leftovers")]


def askbox(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = shutil.which("askbox") or os.path.join(os.path.dirname(os.sys.executable), "askbox")
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize(
    "script, code, outcome",
    [
        ("cat /workspace/README.md", 0, "finished"),
        ("echo bad >&2; exit 3", 3, "exited with code 3"),
        ("sleep 100", 124, "timed out"),
        ("head -c 1G /dev/zero | tail", 137, "out of memory"),
    ],
    ids=["ok", "exit-3", "timeout", "oom"],
)
def test_exit_codes(sandbox_image, repo, script, code, outcome):
    result = askbox(
        "sandbox",
        "run",
        "--repo",
        str(repo),
        "--image",
        sandbox_image,
        "--timeout",
        "2",
        "--memory",
        "64m",
        "--",
        "bash",
        "-c",
        script,
    )
    assert result.returncode == code, result.stderr
    assert outcome in result.stderr.splitlines()[-1]
    if code == 0:
        assert result.stdout == "# demo repo\n"


def test_output_streams_as_it_comes(sandbox_image):
    exe = shutil.which("askbox") or os.path.join(os.path.dirname(os.sys.executable), "askbox")
    proc = subprocess.Popen(
        [exe, "sandbox", "run", "--image", sandbox_image, "--", "bash", "-c", "echo first; sleep 2; echo second"],
        stdout=subprocess.PIPE,
        text=True,
    )
    start = time.monotonic()
    assert proc.stdout.readline() == "first\n"
    first_at = time.monotonic() - start
    assert proc.stdout.readline() == "second\n"
    second_at = time.monotonic() - start
    assert proc.wait(timeout=30) == 0
    assert second_at - first_at > 1.5  # the first line arrived before the command finished


def test_default_image_is_the_sandbox_image(docker_client):
    """The README's example works offline: the default image is the agents' base, which
    builds without Cursor's servers (issue 13; it was the default agent's image)."""
    result = askbox("sandbox", "run", "--", "bash", "-c", "echo has-bash", env={"ASKBOX_AGENT": "cursor"})
    assert result.returncode == 0 and result.stdout == "has-bash\n", result.stderr


def test_missing_cursor_image_names_what_to_do_not_offline(docker_client):
    cursor = "askbox/agent-cursor:0.0.0-never-built"  # as a checkout whose tag is not built sees it
    result = askbox("sandbox", "run", "--image", cursor, "--", "true")
    assert result.returncode == 125
    # --offline skips agent-cursor, so the message must not send the user there.
    assert cursor in result.stderr and "--offline" not in result.stderr
    assert "askbox images build agent-cursor" in result.stderr and "ASKBOX_AGENT=gemini" in result.stderr


def test_dead_docker_daemon(tmp_path):
    result = askbox("sandbox", "run", "--", "true", env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})
    assert result.returncode == 125
    assert "Docker daemon not reachable" in result.stderr
