"""Citations and access through the real parts: fake Slack -> `askbox bot` -> Redis ->
`askbox worker` -> the real Gemini CLI in a sandbox against the fake Gemini API.

- An answer citing an existing ``path:line`` reaches the Slack thread as a permalink at
  the commit the question was pinned to (and the footer links that commit); a made-up
  path, a line past the end and anything in a code block stay plain.
- An answer written the way real ones are (paths with their lines in words, lines that
  refer to the file named last, bare file names, symbols) gets its permalinks, and the
  footer says how many references were verified; the prompt the agent got names the
  repository, the commit and the operators' instructions; the snapshot's index is built
  once and shared by the next question on that commit.
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

from jobs import keys
from jobs import queue as jobs_queue
from jobs.question import Origin, Question
from jobs.settings import JobSettings
from jobs.tree_index import Definition, TreeIndex
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
    return {
        **base,
        "ASKBOX_AGENT": "gemini",
        "ASKBOX_GATEWAY_SOCKET_DIR": str(proxy.socket_dir),
        "ASKBOX_EGRESS_SOCKET_DIR": str(egress_root),
        "ASKBOX_RETRIES": "0",
    }


def test_cited_lines_link_to_the_pinned_commit_in_slack(
    fake, bots, redis_server, repo, gemini_api, egress_root, gateway, tmp_path
):
    sha = commit_all(repo)
    gemini_api.script(
        Text(
            "`answer()` is defined at src/app.py:1-2 and returns in `src/app.py:2`; see also README.md.\n"
            "Not in src/nope.py:3, and src/app.py:99 does not exist.\n"
            "```\nsrc/app.py:1\n```",
            chunks=2,
        )
    )
    pool = Workers(
        gemini_env(bot_env(fake, redis_server.url, repo), gateway(gemini_api.base_url, redis_server.url), egress_root)
    )
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
    # `answer()` names the one definition of answer (jobs/tree_index.py): a symbol link.
    assert f"<{BLOB}/{sha}/src/app.py#L1|answer()>" in shown
    assert shown.count("<https://") == 4 and "(<" not in shown  # nothing else linked, nothing "deceptive"
    assert f"<https://github.com/acme/demo/commit/{sha}|{sha[:7]}>" in footer, footer
    assert "ghp_" not in json.dumps(answer.blocks) + (answer.text or "")


PROVIDER = "src/pkg/json/provider.py"
REAL_ANSWER = f"""\
`DefaultJSONProvider` serialises with `ensure_ascii`; it is in `{PROVIDER}` (lines 9-14).
The `dumps` method (lines 13-14) returns a string. See also `unique_module.py` and
`Blueprint._check_setup_finished`.
Not linked: `blueprints.py` (two of them), `Blueprint` (two), `src/pkg/ghost.py` (lines 1-2), {PROVIDER} line 999.
```
DefaultJSONProvider in {PROVIDER}:9
```"""


def real_tree(repo: Path) -> None:
    (repo / PROVIDER).parent.mkdir(parents=True)
    (repo / PROVIDER).write_text(
        '"""JSON providers."""\n\n\nclass JSONProvider:\n    def dumps(self, obj):\n        raise NotImplementedError\n'
        "\n\nclass DefaultJSONProvider(JSONProvider):\n    ensure_ascii = True\n    sort_keys = True\n\n"
        "    def dumps(self, obj):\n        return str(obj)\n"
    )
    (repo / "src/pkg/sansio").mkdir()
    (repo / "src/pkg/blueprints.py").write_text("class Blueprint:\n    pass\n")
    (repo / "src/pkg/sansio/blueprints.py").write_text(
        "class Blueprint:\n    def _check_setup_finished(self, name):\n        raise AssertionError(name)\n"
    )
    (repo / "src/pkg/unique_module.py").write_text("VALUE = 1\n")


def test_real_answers_get_their_links_and_the_footer_its_count(
    fake, bots, redis, redis_server, repo, gemini_api, egress_root, gateway, tmp_path
):
    real_tree(repo)
    sha = commit_all(repo)
    gemini_api.script(Text(REAL_ANSWER, chunks=3), Text("`OnlyInTheSharedIndex` is the one."))
    env = gemini_env(bot_env(fake, redis_server.url, repo), gateway(gemini_api.base_url, redis_server.url), egress_root)
    env["ASKBOX_REPOS"] = json.dumps(
        {"demo": {"path": str(repo), "instructions": "Readers are support engineers."}, "web": str(repo)}
    )
    env["ASKBOX_CHANNEL_INSTRUCTIONS"] = json.dumps({CHANNEL: "Keep it to one paragraph."})
    pool = Workers(env)
    pool.start(1, log_dir=tmp_path)
    try:
        bots(1)
        first = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> how is JSON serialised?")
        fake.push_event(first)
        fake.wait_until(lambda: "white_check_mark" in fake.get_message(CHANNEL, first["ts"]).reactions, timeout=120)
        # The index of this snapshot is in Redis now; a second question on the same commit
        # uses it as stored (a definition only the stored index has is linked), not a build of its own.
        [key] = redis.keys(keys.tree_index("*")[:-32] + "*")
        assert 0 < redis.ttl(key) <= 24 * 3600
        stored = TreeIndex.loads(redis.get(key))
        assert stored is not None and stored.definition("DefaultJSONProvider") is not None
        doctored = TreeIndex(
            files=stored.files, definitions=(Definition("src/pkg/unique_module.py", 1, ("OnlyInTheSharedIndex",)),)
        )
        redis.set(key, doctored.dumps(), keepttl=True)
        second = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> which one is it?")
        fake.push_event(second)
        fake.wait_until(lambda: "white_check_mark" in fake.get_message(CHANNEL, second["ts"]).reactions, timeout=120)
    finally:
        pool.stop()

    def shown_and_footer(ts: str) -> tuple[str, str]:
        replies = [m for m in fake.thread(CHANNEL, ts) if m.is_bot and not m.deleted]
        answer = next(m for m in replies if any(b["type"] == "context" for b in m.blocks or []))
        shown = "\n".join(b["text"]["text"] for b in answer.blocks if b["type"] == "section")
        return shown, next(b for b in answer.blocks if b["type"] == "context")["elements"][0]["text"]

    shown, footer = shown_and_footer(first["ts"])
    at = f"{BLOB}/{sha}"
    expected = [
        f"<{at}/{PROVIDER}#L9|DefaultJSONProvider>",  # a symbol
        f"<{at}/{PROVIDER}#L10|ensure_ascii>",
        f"<{at}/{PROVIDER}#L9-L14|{PROVIDER}>",  # a path with its lines in words
        f"(<{at}/{PROVIDER}#L13-L14|lines 13-14>)",  # lines in the file named last
        f"<{at}/src/pkg/unique_module.py|unique_module.py>",  # a bare name unique in the tree
        f"<{at}/src/pkg/sansio/blueprints.py#L2|Blueprint._check_setup_finished>",  # a qualified symbol
    ]
    for link in expected:
        assert link in shown, (link, shown)
    assert shown.count("<https://") == len(expected), shown  # nothing else: ambiguous, made up, in code
    assert "`blueprints.py` (two of them), `Blueprint` (two), `src/pkg/ghost.py` (lines 1-2)" in shown
    assert f"```\nDefaultJSONProvider in {PROVIDER}:9\n```" in shown
    assert footer.endswith(f"· {len(expected)} references verified"), footer
    # The prompt: repository, commit, format, and the operators' words for it and this channel.
    prompt = gemini_api.generate_requests[0].text()
    assert f'"demo" at commit {sha}' in prompt and "`path/to/file.py:40-58`" in prompt
    assert "- For this repository: Readers are support engineers." in prompt
    assert "- For this channel: Keep it to one paragraph." in prompt
    shown, footer = shown_and_footer(second["ts"])
    assert f"<{at}/src/pkg/unique_module.py#L1|OnlyInTheSharedIndex>" in shown, shown
    assert footer.endswith("· 1 reference verified"), footer


def test_forged_jobs_for_hidden_repos_are_refused_and_cached_answers_stay_in_their_channel(
    redis, redis_server, repo, gemini_api, egress_root, gateway, docker_client, tmp_path
):
    secret = tmp_path / "secret-repo"
    secret.mkdir()
    (secret / "KEYS.md").write_text("the launch codes\n")
    commit_all(repo)
    env = worker_env(
        redis_server,
        repo,
        egress_root,
        ASKBOX_REPOS=json.dumps({"demo": str(repo), "secret": str(secret)}),
        ASKBOX_CHANNEL_REPOS=json.dumps({"C0AAAAAAAA1": "demo", "C0BBBBBBBB2": "demo"}),
        ASKBOX_REPO_ACCESS=json.dumps({"secret": {"channels": ["C0VAULT0001"]}}),
    )
    env.pop("SLACK_BOT_TOKEN", None)  # no Slack: finals are read from the jobs' meta
    gemini_api.script(Text("In channel A: it returns 42."), Text("In channel B: it returns 42."))
    pool = Workers(gemini_env(env, gateway(gemini_api.base_url, redis_server.url), egress_root))

    def slack_question(channel: str, ts: str, text: str, repo_name: str = "demo") -> dict:
        origin = Origin(kind="slack", user=ASKER, team="T0FAKETEAM1", channel=channel, thread_ts=ts, message_ts=ts)
        return Question(origin=origin, text=text, repo=repo_name).model_dump(mode="json")

    # Written straight into Redis, as anyone who can write to it would: no bot involved.
    asked = time.time()
    forged = {
        name: _raw_job(
            redis,
            "askbox-high",
            [jobs_queue.JOB_FUNCTION, None, [slack_question("C0AAAAAAAA1", f"1.{i}", "what are the keys?", name)], {}],
        )
        for i, name in enumerate(["secret", "nosuchrepo"])
    }
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
