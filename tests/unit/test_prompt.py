"""The prompt contract (jobs/prompt.py): what the agent is told besides the question, the
operators' instructions per repository and per channel, and `askbox ask --explain`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bot.cli import main
from jobs.prompt import Instruction, Setting, Turn, build_prompt, setting_for
from jobs.settings import JobSettings
from sandbox.agents.adapters import CursorAgent
from sandbox.agents.settings import AgentSettings
from tests.integration.git_helpers import GIT_ENV

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_the_contract_names_the_repository_the_commit_and_the_reference_format():
    prompt = build_prompt("How are retries done?", Setting(repo="web", commit=SHA))
    assert '"web"' in prompt and f"at commit {SHA}" in prompt
    assert "read-only" in prompt and "/workspace" in prompt
    assert "`path/to/file.py:42`" in prompt and "`path/to/file.py:40-58`" in prompt and "root" in prompt
    assert "Answer the question first" in prompt and "evidence" in prompt
    assert "If\nthe code does not tell, say so" in prompt
    assert "posted in Slack" in prompt and "No tables" in prompt and "12,000" in prompt
    assert "AGENTS.md" in prompt
    assert prompt.endswith("Question:\nHow are retries done?")


def test_a_terminal_answer_and_a_directory_without_commit():
    prompt = build_prompt("q", Setting(repo="/srv/repos/x", commit=None, destination="terminal"))
    assert "no commit" in prompt and "terminal" in prompt and "Slack" not in prompt


def test_history_and_summary_come_between_the_contract_and_the_question():
    prompt = build_prompt("and then?", Setting(repo="web", commit=SHA), [Turn(question="q1", answer="a1")], "earlier")
    contract_end = prompt.index("AGENTS.md")
    assert (
        contract_end
        < prompt.index("Summary of the conversation so far:\nearlier")
        < prompt.index("Q: q1\nA: a1")
        < prompt.index("Question:\nand then?")
    )


def test_operator_instructions_per_repository_then_per_channel(monkeypatch):
    monkeypatch.setenv(
        "ASKBOX_REPOS",
        json.dumps(
            {
                "web": {"path": "/srv/repos/web", "instructions": "Readers are support engineers: explain behaviour."},
                "api": "/srv/repos/api",
            }
        ),
    )
    monkeypatch.setenv("ASKBOX_CHANNEL_INSTRUCTIONS", json.dumps({"C0SUPPORT1": "Answer in three sentences."}))
    jobs = JobSettings()
    setting = setting_for(jobs, "web", SHA, "C0SUPPORT1", "slack")
    assert setting.instructions == (
        Instruction("this repository", "Readers are support engineers: explain behaviour."),
        Instruction("this channel", "Answer in three sentences."),
    )
    prompt = build_prompt("q", setting)
    assert (
        prompt.index("- For this repository: Readers are support engineers")
        < prompt.index("- For this channel: Answer in three sentences.")
        < prompt.index("Question:")
    )
    assert setting_for(jobs, "api", SHA, "C0OTHER0001", "slack").instructions == ()
    assert setting_for(jobs, "api", SHA, "C0SUPPORT1", "slack").instructions == (
        Instruction("this channel", "Answer in three sentences."),
    )
    assert "operators" not in build_prompt("q", setting_for(jobs, "api", SHA))


@pytest.mark.parametrize(
    "variable, value, words",
    [
        ("ASKBOX_CHANNEL_INSTRUCTIONS", "not json", "ASKBOX_CHANNEL_INSTRUCTIONS"),
        ("ASKBOX_CHANNEL_INSTRUCTIONS", json.dumps({"C1": "x" * 4001}), "ASKBOX_CHANNEL_INSTRUCTIONS"),
        ("ASKBOX_REPOS", json.dumps({"web": {"path": "/srv/web", "instructions": "x" * 4001}}), "'web'"),
    ],
)
def test_bad_instructions_are_refused_at_start(monkeypatch, capsys, variable, value, words):
    monkeypatch.setenv(variable, value)
    assert main(["ask", "--explain", "q"]) == 2
    err = capsys.readouterr().err
    assert variable in err and words in err


def git_checkout(path: Path) -> str:
    path.mkdir()
    (path / "app.py").write_text("print('hi')\n")
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "one"]):
        subprocess.run(["git", "-C", str(path), *argv], check=True, env=GIT_ENV)
    return subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], check=True, capture_output=True, text=True, env=GIT_ENV
    ).stdout.strip()


def test_ask_explain_prints_the_prompt_and_runs_nothing(tmp_path, monkeypatch, capsys):
    sha = git_checkout(tmp_path / "web")
    monkeypatch.setenv(
        "ASKBOX_REPOS", json.dumps({"web": {"path": str(tmp_path / "web"), "instructions": "Audience: support."}})
    )
    monkeypatch.setenv("ASKBOX_CHANNEL_INSTRUCTIONS", json.dumps({"C0SUPPORT1": "Be brief."}))
    monkeypatch.setenv("ASKBOX_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing may be enqueued: no Redis there
    assert main(["ask", "--explain", "--repo", "web", "Where is main?"]) == 0
    out = capsys.readouterr().out
    assert f'"web" at commit {sha}' in out and "printed in a terminal" in out
    assert "- For this repository: Audience: support." in out and "Be brief." not in out
    assert out.rstrip().endswith("Question:\nWhere is main?")
    assert main(["ask", "--explain", "--repo", "web", "--channel", "C0SUPPORT1", "Where is main?"]) == 0
    out = capsys.readouterr().out
    assert "posted in Slack" in out and "- For this channel: Be brief." in out


def test_cursor_agent_keeps_the_repositorys_agent_instructions():
    # cursor-agent reads AGENTS.md, CLAUDE.md and .cursor/rules from its workspace, the
    # directory it runs in (the snapshot, mounted at /workspace and made the working
    # directory by sandbox/runner.py), in print mode too (Cursor's CLI docs, "Rules").
    # Nothing askbox passes may move the workspace elsewhere or leave it untrusted.
    argv = CursorAgent(AgentSettings()).command("gpt-5")
    assert "--trust" in argv
    assert not any(flag.startswith(("--workspace", "-w", "--worktree")) for flag in argv)
    prompt = build_prompt("q", Setting(repo="web", commit=SHA))
    assert "AGENTS.md" in prompt and "follow\nthem about the code" in prompt
