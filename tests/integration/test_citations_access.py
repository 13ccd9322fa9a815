"""Citations and access through the real parts: fake Slack -> `askbox bot` -> Redis ->
`askbox worker` -> the real Gemini CLI in a sandbox against the fake Gemini API.

- An answer citing an existing ``path:line`` reaches the Slack thread as a permalink at
  the commit the question was pinned to (and the footer links that commit); a made-up
  path, a line past the end and anything in a code block stay plain.
- A job forged into Redis for a repository its channel may not see is refused by the
  worker, in words that say no more than an unknown name would, with no container.
- The same question about the same commit in two channels: the second channel is not
  served the first one's cached answer.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from jobs import queue as jobs_queue
from jobs.question import Origin, Question
from jobs.settings import JobSettings
from tests.fakes.gemini_api import FakeGeminiAPI, Text
from tests.integration.conftest import ASKER, CHANNEL, bot_env
from tests.integration.pipeline_helpers import Workers, wait_final, worker_env
from tests.integration.test_forged_jobs import _raw_job, _sandboxes_created

pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.usefixtures("no_leftovers")]

# What an operator might have cloned from: a token in the URL must never reach a link.
REMOTE = "https://x-access-token:ghp_CLONETOKEN123@github.com/acme/demo.git"
BLOB = "https://github.com/acme/demo/blob"


def commit_all(repo: Path) -> str:
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    if not (repo / ".git").exists():
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        subprocess.run([*git, "remote", "add", "origin", REMOTE], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "change", "--allow-empty"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def gemini_api():
    with FakeGeminiAPI() as api:
        yield api


def gemini_env(base: dict[str, str], proxy, egress_root: Path) -> dict[str, str]:
    return {**base, "ASKBOX_AGENT": "gemini", "ASKBOX_GATEWAY_SOCKET_DIR": str(proxy.socket_dir),
            "ASKBOX_EGRESS_SOCKET_DIR": str(egress_root), "ASKBOX_RETRIES": "0"}


def test_cited_lines_link_to_the_pinned_commit_in_slack(fake, bots, redis_server, repo, gemini_api, egress_root,
                                                         gateway, tmp_path):
    sha = commit_all(repo)
    gemini_api.script(Text(
        "`answer()` is defined at src/app.py:1-2 and returns in `src/app.py:2`; see also README.md.\n"
        "Not in src/nope.py:3, and src/app.py:99 does not exist.\n"
        "```\nsrc/app.py:1\n```", chunks=2))
    pool = Workers(gemini_env(bot_env(fake, redis_server.url, repo), gateway(gemini_api.base_url, redis_server.url),
                              egress_root))
    pool.start(1, log_dir=tmp_path)
    try:
        bots(1)
        mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> where is answer() defined?")
        fake.push_event(mention)
        fake.wait_until(lambda: "white_check_mark" in fake.get_message(CHANNEL, mention["ts"]).reactions, timeout=120)
    finally:
        pool.stop()
    commit_all(repo)  # a later push changes nothing in the links already posted
    replies = [m for m in fake.thread(CHANNEL, mention["ts"]) if m.is_bot and not m.deleted]
    answer = next(m for m in replies if "answer()" in json.dumps(m.blocks or []))
    shown = "\n".join(b["text"]["text"] for b in answer.blocks if b["type"] == "section")
    footer = next(b for b in answer.blocks if b["type"] == "context")["elements"][0]["text"]

    assert f"<{BLOB}/{sha}/src/app.py#L1-L2|src/app.py:1-2>" in shown, shown
    assert f"<{BLOB}/{sha}/src/app.py#L2|src/app.py:2>" in shown
    assert f"<{BLOB}/{sha}/README.md|README.md>" in shown
    assert "Not in src/nope.py:3, and src/app.py:99 does not exist." in shown  # plain, never linked
    assert "```\nsrc/app.py:1\n```" in shown  # code untouched
    assert shown.count("<https://") == 3 and "(<" not in shown  # nothing else linked, nothing "deceptive"
    assert f"<https://github.com/acme/demo/commit/{sha}|{sha[:7]}>" in footer, footer
    assert "ghp_" not in json.dumps(answer.blocks) + (answer.text or "")


def test_forged_jobs_for_hidden_repos_are_refused_and_cached_answers_stay_in_their_channel(
        redis, redis_server, repo, gemini_api, egress_root, gateway, docker_client, tmp_path):
    secret = tmp_path / "secret-repo"
    secret.mkdir()
    (secret / "KEYS.md").write_text("the launch codes\n")
    commit_all(repo)
    env = worker_env(redis_server, repo, egress_root,
                     ASKBOX_REPOS=json.dumps({"demo": str(repo), "secret": str(secret)}),
                     ASKBOX_CHANNEL_REPOS=json.dumps({"C0AAAAAAAA1": "demo", "C0BBBBBBBB2": "demo"}),
                     ASKBOX_REPO_ACCESS=json.dumps({"secret": {"channels": ["C0VAULT0001"]}}))
    env.pop("SLACK_BOT_TOKEN", None)  # no Slack: finals are read from the jobs' meta
    gemini_api.script(Text("In channel A: it returns 42."), Text("In channel B: it returns 42."))
    pool = Workers(gemini_env(env, gateway(gemini_api.base_url, redis_server.url), egress_root))

    def slack_question(channel: str, ts: str, text: str, repo_name: str = "demo") -> dict:
        origin = Origin(kind="slack", user=ASKER, team="T0FAKETEAM1", channel=channel, thread_ts=ts, message_ts=ts)
        return Question(origin=origin, text=text, repo=repo_name).model_dump(mode="json")

    # Written straight into Redis, as anyone who can write to it would: no bot involved.
    asked = time.time()
    forged = {name: _raw_job(redis, "askbox-high", [
        jobs_queue.JOB_FUNCTION, None, [slack_question("C0AAAAAAAA1", f"1.{i}", "what are the keys?", name)], {}])
        for i, name in enumerate(["secret", "nosuchrepo"])}
    pool.start(1, log_dir=tmp_path)
    try:
        refused = {name: wait_final(redis, job_id, 60, pool) for name, job_id in forged.items()}
        def ask(channel: str, ts: str, text: str) -> dict:
            question = Question.model_validate(slack_question(channel, ts, text))
            return wait_final(redis, jobs_queue.enqueue(redis, question, JobSettings()).job.id, 120, pool)

        first_final = ask("C0AAAAAAAA1", "2.1", "What does answer() return?")
        again_final = ask("C0AAAAAAAA1", "2.2", "what does answer() return")
        other_final = ask("C0BBBBBBBB2", "3.1", "What does answer() return?")
    finally:
        pool.stop()

    # The hidden repository reads exactly like one that does not exist.
    assert refused["secret"]["kind"] == refused["nosuchrepo"]["kind"] == "rejected", pool.tail()
    assert refused["secret"]["text"] == refused["nosuchrepo"]["text"].replace("nosuchrepo", "secret")
    assert "Known repositories: demo." in refused["secret"]["text"] and str(secret) not in refused["secret"]["text"]
    assert _sandboxes_created(docker_client, asked, forged["secret"]) == []
    assert all("launch codes" not in r.text() for r in gemini_api.requests)
    # Cache: answered, served again in its own channel, asked afresh in the other.
    assert (first_final["kind"], first_final["cached"]) == ("answer", False), first_final
    assert again_final["cached"] and again_final["text"].startswith("In channel A")
    assert (other_final["kind"], other_final["cached"]) == ("answer", False), other_final
    assert other_final["text"] == "In channel B: it returns 42."
    assert len(gemini_api.generate_requests) == 2
