"""Repositories as sources: git remotes over smart HTTP (with a token) and file://, each
question pinned to a commit and answered from its read-only snapshot.

Real `askbox worker` and `askbox gateway` processes, the real Gemini CLI in the real
sandbox, real Redis, real git (its own `git http-backend`), the fake Gemini API. The agent
runs shell commands inside the sandbox as an attacker would, and the fake answers with
what they printed, so every assertion is about what the sandbox really saw.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import SecretStr

from jobs import queue as jobs_queue
from jobs.question import Origin, Question
from jobs.repos import RepoRef, pin
from jobs.repos.locks import locked
from jobs.repos.mirror import Mirror
from jobs.settings import JobSettings
from tests.fakes.gemini_api import FakeGeminiAPI, FunctionCall, RecordedRequest, Text
from tests.integration.git_helpers import GitHTTPServer, Upstream, git
from tests.integration.pipeline_helpers import ASKBOX, Workers, wait_final, wait_for, worker_env

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.usefixtures("no_leftovers")]

TOKEN = "glpat-" + secrets.token_hex(12)
ATTACK = (
    "cat VERSION; ls -a; cat .env; cat deploy/id_rsa; cat tls/server.key; cat .git/config; "
    "ls -a /workspace/.git; env; grep -rs glpat- /workspace /home /tmp /etc | head -3; echo done-attacking"
)


def shell(command: str) -> FunctionCall:
    return FunctionCall("run_shell_command", {"command": command})


def tool_outputs(request: RecordedRequest) -> list[str]:
    return [json.dumps(r.get("response", {})) for r in request.all_function_responses()]


def echo(request: RecordedRequest) -> Text:
    """The model repeats everything its tools printed: the fake cannot know it otherwise."""
    return Text("Tools said: " + " | ".join(tool_outputs(request)), chunks=2)


def ask(redis, text: str, repo: str) -> str:
    question = Question(origin=Origin(kind="terminal", user="alice"), text=text, repo=repo)
    return jobs_queue.enqueue(redis, question, JobSettings()).job.id


def redis_dump(redis) -> bytes:
    """Every value in the test's Redis, RQ's compressed job data unpacked."""
    found: list[bytes] = []
    for key in redis.keys("*"):
        kind = redis.type(key).decode()
        read = {
            "string": lambda k: [redis.get(k)],
            "hash": lambda k: list(redis.hgetall(k).values()),
            "list": lambda k: redis.lrange(k, 0, -1),
            "set": lambda k: list(redis.smembers(k)),
            "zset": lambda k: redis.zrange(k, 0, -1),
        }.get(kind, lambda k: [])
        values = read(key)
        for value in values:
            found.append(value or b"")
            try:
                found.append(zlib.decompress(value))
            except (zlib.error, TypeError):
                pass
    return b"\n".join(found)


@pytest.fixture()
def sources(tmp_path: Path):
    """A remote `web` served over smart HTTP with a token, and `lib` over file://."""
    served = tmp_path / "served"
    web = Upstream(served, "web")
    first = web.commit(
        {
            "VERSION": "v1\n",
            "README.md": "# web\n",
            ".env": f"TOKEN={TOKEN}\n",
            "deploy/id_rsa": "-----BEGIN OPENSSH PRIVATE KEY----- id-rsa-content\n",
            "tls/server.key": "server-key-content\n",
        }
    )
    with GitHTTPServer(served, TOKEN) as server:
        yield {"web": web, "server": server, "first": first}


def test_questions_follow_the_remote_pinned_to_one_commit(
    sources, redis_server, redis, egress_root, tmp_path, gateway, built_images
):
    web, server = sources["web"], sources["server"]
    state = tmp_path / "state"
    repos = {"web": {"url": server.url("web"), "token_env": "WEB_TOKEN"}}
    with FakeGeminiAPI() as api:
        proxy = gateway(api.base_url, redis_server.url)
        env = worker_env(
            redis_server,
            tmp_path,
            egress_root,
            ASKBOX_AGENT="gemini",
            ASKBOX_RETRIES="0",
            ASKBOX_GATEWAY_SOCKET_DIR=str(proxy.socket_dir),
            ASKBOX_REPOS=json.dumps(repos),
            WEB_TOKEN=TOKEN,
            ASKBOX_REPO_REFRESH="1",
            ASKBOX_REPO_MIRRORS=str(state / "mirrors"),
            ASKBOX_REPO_SNAPSHOTS=str(state / "snapshots"),
        )
        pool = Workers(env)
        pool.start(1, log_dir=tmp_path)
        try:
            mirror = Mirror(RepoRef(name="web", url=server.url("web")), state / "mirrors")
            # 1. From the remote, through the token; the attacker finds no secret, no .git.
            api.script(shell(ATTACK), echo)
            one = wait_final(redis, ask(redis, "what version is this?", "web"), timeout=120, workers=pool)
            attack_output = " ".join(tool_outputs(api.generate_requests[-1]))

            # 2. A push, then a question: the new commit, in the footer and in what the agent read.
            second = web.commit({"VERSION": "v2\n"})
            time.sleep(1.5)  # older than ASKBOX_REPO_REFRESH: fetched (by the refresher or the question)
            api.script(shell("cat VERSION"), echo)
            two = wait_final(redis, ask(redis, "and now?", "web"), timeout=120, workers=pool)

            # 3. A push DURING an answer: the refresher fetches it into the mirror, yet the
            #    agent reads the same tree on its second look.

            def push_then_look_again(request: RecordedRequest) -> FunctionCall:
                pushed = web.commit({"VERSION": "v3\n"})
                wait_for(lambda: mirror.state().commit == pushed, 30, "the refresher to fetch the push")
                return shell("cat VERSION; echo second-look")

            api.script(shell("cat VERSION; echo first-look"), push_then_look_again, echo)
            three = wait_final(redis, ask(redis, "watch it", "web"), timeout=120, workers=pool)
            third = mirror.state().commit

            # 4. The remote is down: answered from the last good commit, saying so.
            server.broken = True
            wait_for(lambda: mirror.state().error, 30, "a fetch to fail")
            api.script(shell("cat VERSION"), echo)
            four = wait_final(redis, ask(redis, "still there?", "web"), timeout=120, workers=pool)
        finally:
            pool.stop()
        logs = "".join(p.read_text(errors="replace") for p in pool.logs) + proxy.output()

    assert one["kind"] == "answer", one
    assert one["commit"] == sources["first"] and "v1" in one["text"]
    assert "done-attacking" in attack_output and "README.md" in attack_output
    for secret in ("id-rsa-content", "server-key-content", TOKEN):
        assert secret not in attack_output, f"the sandbox read {secret}"
    assert "No such file" in attack_output  # .env, the keys and .git are simply absent
    assert any(auth for _, _, auth in server.requests) and any(not auth for _, _, auth in server.requests)

    assert two["kind"] == "answer" and two["commit"] == second and "v2" in two["text"], two
    assert three["kind"] == "answer" and three["commit"] == second, three
    assert third != second  # the mirror moved on during the answer ...
    assert "first-look" in three["text"] and "second-look" in three["text"]
    assert "v3" not in three["text"] and three["text"].count("v2") == 2  # ... the agent's tree did not

    assert four["kind"] == "answer" and four["commit"] == third, four
    assert f"_from {third[:7]}, " in four["text"] and "the last fetch failed (" in four["text"]
    assert "503" in four["text"]

    # The token: not in a snapshot, the mirror, the logs or Redis (and above: not in the sandbox).
    stored = subprocess.run(["grep", "-rl", TOKEN, str(state)], capture_output=True, text=True)
    assert stored.stdout == "", f"the token is stored in {stored.stdout}"
    assert TOKEN not in logs
    assert TOKEN.encode() not in redis_dump(redis)
    snapshots = sorted(p.name.split("-")[0] for p in (state / "snapshots" / "sealed").glob("*/[0-9a-f]*") if p.is_dir())
    assert snapshots == sorted([sources["first"], second, third]), snapshots


def test_unusable_repositories_end_in_one_clear_rejection(
    redis_server, redis, egress_root, tmp_path, built_images, gateway
):
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)  # as `mktemp -d` makes it
    (private / "README.md").write_text("# private\n")
    repos = {
        "gone": (tmp_path / "no-such.git").as_uri(),
        "private": str(private),
        "missing": str(tmp_path / "not-here"),
    }
    with FakeGeminiAPI() as api:
        proxy = gateway(api.base_url, redis_server.url)
        env = worker_env(
            redis_server,
            tmp_path,
            egress_root,
            ASKBOX_AGENT="gemini",
            ASKBOX_RETRIES="2",
            ASKBOX_GATEWAY_SOCKET_DIR=str(proxy.socket_dir),
            ASKBOX_REPOS=json.dumps(repos),
            ASKBOX_REPO_MIRRORS=str(tmp_path / "mirrors"),
            ASKBOX_REPO_SNAPSHOTS=str(tmp_path / "snaps"),
        )
        pool = Workers(env)
        pool.start(1, log_dir=tmp_path)
        try:
            finals = {
                name: wait_final(redis, ask(redis, "hello there", name), timeout=60, workers=pool) for name in repos
            }
        finally:
            pool.stop()
        inline = subprocess.run(
            [ASKBOX, "ask", "--inline", "--agent", "gemini", "--repo", str(private), "hi"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert api.requests == []  # no sandbox, no model call for any of them
    for name, final in finals.items():
        assert final["kind"] == "rejected", (name, final)
        assert "\n" not in final["text"].strip(), final["text"]
    assert "gone" in finals["gone"]["text"] and "does not appear to be a git repository" in finals["gone"]["text"]
    expected = f"cannot read the repository directory {private} (mode 0700, owner root)"
    assert expected in finals["private"]["text"] and f"chmod o+rx {private}" in finals["private"]["text"]
    assert str(tmp_path / "not-here") in finals["missing"]["text"] and "does not exist" in finals["missing"]["text"]
    # askbox ask --inline says the same, in one line, before any sandbox starts.
    assert inline.returncode == 2, inline.stderr
    assert expected in inline.stderr and "Traceback" not in inline.stderr
    assert [line for line in inline.stderr.splitlines() if line.strip()] == [inline.stderr.strip()]


def test_a_live_directory_hides_secrets_and_history_is_read_only_and_credential_free(
    redis_server, redis, egress_root, tmp_path, gateway, built_images, repo
):
    (repo / ".env").write_text("SECRET=live-env-content\n")
    (repo / "src" / "tls.pem").write_text("live-pem-content\n")
    (repo / ".env.d").mkdir()
    (repo / ".env.d" / "prod").write_text("live-dir-content\n")
    for path in [repo, *repo.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    upstream = Upstream(tmp_path / "served", "hist")
    first = upstream.commit({"VERSION": "v1\n"}, "the first version")
    # A history that never held a denied path: one that did is refused (test_hostile_repos.py).
    pinned = upstream.commit({"VERSION": "v2\n"}, "the second version")
    repos = {"demo": str(repo), "hist": {"url": upstream.file_url, "history": True}}
    with FakeGeminiAPI() as api:
        proxy = gateway(api.base_url, redis_server.url)
        env = worker_env(
            redis_server,
            repo,
            egress_root,
            ASKBOX_AGENT="gemini",
            ASKBOX_RETRIES="0",
            ASKBOX_GATEWAY_SOCKET_DIR=str(proxy.socket_dir),
            ASKBOX_REPOS=json.dumps(repos),
        )
        pool = Workers(env)
        pool.start(1, log_dir=tmp_path)
        try:
            api.script(
                shell("cat README.md .env src/tls.pem; ls -a .env.d; cat .env.d/prod; echo done-attacking"), echo
            )
            live = wait_final(redis, ask(redis, "show me", "demo"), timeout=120, workers=pool)
            live_output = " ".join(tool_outputs(api.generate_requests[-1]))
            api.script(
                shell(
                    "git log --format='%H %s'; git remote -v; cat .git/config; "
                    "touch .git/x; git commit --allow-empty -m mine; echo done-attacking"
                ),
                echo,
            )
            hist = wait_final(redis, ask(redis, "when did VERSION change?", "hist"), timeout=120, workers=pool)
            hist_output = " ".join(tool_outputs(api.generate_requests[-1]))
        finally:
            pool.stop()
    assert live["kind"] == "answer" and live["commit"] is None, live
    assert "# demo repo" in live_output and "done-attacking" in live_output
    for secret in ("live-env-content", "live-pem-content", "live-dir-content"):
        assert secret not in live_output, f"the sandbox read {secret}"

    assert hist["kind"] == "answer" and hist["commit"] == pinned, hist
    assert f"{pinned} the second version" in hist_output and f"{first} the first version" in hist_output
    assert "done-attacking" in hist_output
    assert upstream.file_url not in hist_output and str(upstream.bare) not in hist_output  # no remote, no url
    assert "Read-only file system" in hist_output  # nor can the agent change the history it reads


def test_concurrent_questions_fetch_once(sources, tmp_path):
    server, web = sources["server"], sources["web"]
    ref = RepoRef(name="web", url=server.url("web"), token=SecretStr(TOKEN))
    mirrors = tmp_path / "mirrors"
    pin(ref, mirrors, refresh=300)  # the mirror exists
    newer = web.commit({"VERSION": "v2\n"})
    before = len(server.requests)
    # Four questions arrive while a fetch holds the mirror's lock; each finds the mirror stale.
    with ThreadPoolExecutor(4) as pool:
        with locked(Mirror(ref, mirrors).lock_file):
            futures = [pool.submit(pin, ref, mirrors, 0) for _ in range(4)]
            time.sleep(0.5)
        pins = [f.result(timeout=60) for f in futures]
    assert {p.commit for p in pins} == {newer}
    advertised = [r for r in server.requests[before:] if r[1].endswith("service=git-upload-pack") and r[2]]
    assert len(advertised) == 1, server.requests[before:]


def test_fetch_failures_keep_the_last_good_commit_and_say_why(tmp_path):
    upstream = Upstream(tmp_path / "served", "lib")
    good = upstream.commit({"a.txt": "1\n"})
    mirrors = tmp_path / "mirrors"
    ref = RepoRef(name="lib", url=upstream.file_url, branch="main")
    assert pin(ref, mirrors, refresh=0).notice is None
    upstream.commit({"a.txt": "2\n"})
    git(upstream.bare, "branch", "-m", "main", "trunk")  # the branch is renamed away
    deleted = pin(ref, mirrors, refresh=0)
    assert deleted.commit == good
    assert (
        deleted.notice == f"from {good[:7]}, just now: the last fetch failed (the remote has no branch 'main' "
        "(deleted or renamed?))"
    )
    upstream.bare.rename(tmp_path / "elsewhere.git")  # the remote is gone altogether
    gone = pin(ref, mirrors, refresh=0)
    assert gone.commit == good and "does not appear to be a git repository" in gone.notice
    # Tried again once per interval, not by every question: the failure is served as it is.
    again = pin(ref, mirrors, refresh=300)
    assert again.notice == gone.notice
