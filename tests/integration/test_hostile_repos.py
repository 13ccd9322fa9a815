"""A repository is data, never code, and its secrets stay out of the sandbox: hostile
repositories through the whole pipeline.

Real `askbox worker` and `askbox gateway` processes, the real Gemini CLI in the real
sandbox, real Redis, real git; the fake Gemini API. The repositories are armed as their
writer would arm them (tests/integration/git_helpers.py `arm`: every config key, hook,
attribute and URL rewrite known to make git run a command, each leaving a marker file);
the agent reads what it can from inside the sandbox, as an attacker would, and the fake
answers with what it printed.
"""

from __future__ import annotations

import json

import pytest

from jobs import queue as jobs_queue
from jobs.question import Origin, Question
from jobs.settings import JobSettings
from tests.fakes.gemini_api import FakeGeminiAPI, FunctionCall, RecordedRequest, Text
from tests.integration.git_helpers import Upstream, arm, git
from tests.integration.pipeline_helpers import Workers, wait_final, worker_env

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.usefixtures("no_leftovers")]

ORIGIN = "https://github.com/acme/evil.git"
# The secret spellings of the review (issue 17), each with content to look for.
SPELLINGS = {
    ".ENV": "upper-env-value",
    "ID_RSA": "upper-id-rsa-value",
    "deploy/server.PEM": "mixed-pem-value",
    ".npmrc": "npm-token-value",
    ".netrc": "netrc-password-value",
    ".git-credentials": "git-cred-value",
    ".aws/credentials": "aws-secret-value",
    "certs/client.p12": "p12-bundle-value",
    "certs/client.pfx": "pfx-bundle-value",
    "keys/id_dsa": "dsa-key-value",
    "vault.kdbx": "keepass-db-value",
}
HISTORY_SECRET = "deleted-env-value"
READ_EVERYTHING = (
    "ls -laR /workspace; "
    + "".join(f"cat '{path}'; " for path in SPELLINGS)
    + "grep -rs -- -value /workspace; git log --all --format=%H; git show HEAD~1:.env; "
    "cat .git/config; echo done-attacking"
)


def shell(command: str) -> FunctionCall:
    return FunctionCall("run_shell_command", {"command": command})


def tool_outputs(request: RecordedRequest) -> str:
    return " | ".join(json.dumps(r.get("response", {})) for r in request.all_function_responses())


def answer_citing(request: RecordedRequest) -> Text:
    return Text("answer() is defined in src/app.py:1. Tools said: " + tool_outputs(request), chunks=2)


def ask(redis, text: str, repo: str) -> str:
    question = Question(origin=Origin(kind="terminal", user="mallory"), text=text, repo=repo)
    return jobs_queue.enqueue(redis, question, JobSettings()).job.id


def test_a_hostile_repository_runs_nothing_and_no_secret_reaches_the_sandbox(
    redis_server, redis, egress_root, tmp_path, gateway, built_images
):
    markers = tmp_path / "markers"
    # A local checkout and its file:// remote, both armed, with a clean history (history: true).
    evil = Upstream(tmp_path / "evil", "evil")
    evil.commit(
        {
            "README.md": "# evil\n",
            "src/app.py": "def answer():\n    return 42\n",
            ".gitattributes": "* filter=evil diff=evil\n",
        },
        "the only commit",
    )
    head = git(evil.work, "rev-parse", "HEAD")
    arm(evil.work, markers, origin=ORIGIN)
    arm(evil.bare, markers)
    # A remote whose tree holds every spelling of a secret.
    leaky = Upstream(tmp_path / "leaky", "leaky")
    leaky.commit({"README.md": "# leaky\n", **{path: f"{value}\n" for path, value in SPELLINGS.items()}})
    arm(leaky.bare, markers)
    # A remote whose .env was committed, then deleted.
    hist = Upstream(tmp_path / "hist", "hist")
    leaked = hist.commit({"README.md": "# hist\n", ".env": f"TOKEN={HISTORY_SECRET}\n"}, "add config")
    git(hist.work, "rm", "-q", ".env")
    git(hist.work, "commit", "-q", "-m", "remove the secret")
    git(hist.work, "push", "-q", str(hist.bare), "main")
    for path in [tmp_path, *tmp_path.rglob("*")]:  # the sandbox user reads the snapshots, not these
        if path.is_dir():
            path.chmod(0o755)
    repos = {
        "evil": {"path": str(evil.work), "history": True},
        "evil-remote": {"url": evil.file_url, "history": True},
        "leaky": leaky.file_url,
        "hist": {"url": hist.file_url, "history": True},
        "hist-tree": hist.file_url,
    }
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
            ASKBOX_REPO_REFRESH="1",
            ASKBOX_REPO_MIRRORS=str(tmp_path / "state" / "mirrors"),
            ASKBOX_REPO_SNAPSHOTS=str(tmp_path / "state" / "snapshots"),
        )
        pool = Workers(env)
        pool.start(1, log_dir=tmp_path)
        try:
            outputs: dict[str, str] = {}
            finals: dict[str, dict] = {}
            for name in ("evil", "evil-remote", "leaky", "hist-tree"):
                asked = len(api.generate_requests)
                api.script(shell(READ_EVERYTHING), answer_citing)
                finals[name] = wait_final(redis, ask(redis, "where is answer() defined?", name), 120, pool)
                outputs[name] = tool_outputs(api.generate_requests[-1]) if api.generate_requests[asked:] else ""
            before = len(api.requests)
            finals["hist"] = wait_final(redis, ask(redis, "when did the config change?", "hist"), 120, pool)
            hist_requests = api.requests[before:]
        finally:
            pool.stop()

    # Nothing any repository said ran, through pin, snapshot, history, refresh and citations.
    assert sorted(p.name for p in markers.iterdir()) == []
    for name, output in outputs.items():
        assert finals[name]["kind"] == "answer", (name, finals[name])
        assert "done-attacking" in output, (name, output)
        for secret in [*SPELLINGS.values(), HISTORY_SECRET]:
            assert secret not in output, f"the sandbox read {secret} of {name}"
    # The checkout's citations: its origin (read as data) links the pinned commit.
    evil_final = finals["evil"]
    assert evil_final["commit"] == head
    assert evil_final["commit_url"] == f"https://github.com/acme/evil/commit/{head}"
    assert f"[src/app.py:1](https://github.com/acme/evil/blob/{head}/src/app.py#L1)" in evil_final["text"]
    assert head in outputs["evil"] and "the only commit" not in outputs["leaky"]  # history only where asked
    assert outputs["leaky"].count("No such file or directory") >= len(SPELLINGS)  # each cat tried, and failed
    assert "not a git repository" in outputs["hist-tree"]
    # A history holding a denied path is refused, naming it: no sandbox, no model call.
    assert finals["hist"]["kind"] == "rejected", finals["hist"]
    assert f"'.env' (commit {leaked[:12]})" in finals["hist"]["text"], finals["hist"]["text"]
    assert [r for r in hist_requests if r.is_generate] == []
