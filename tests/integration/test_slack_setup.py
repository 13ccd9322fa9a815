"""`askbox slack check` against a fake Slack that grants the bot token some scopes (Slack's
``X-OAuth-Scopes`` header), and `askbox slack manifest` as a command."""

from __future__ import annotations

import json
import os
import subprocess

from bot.manifest import SCOPES
from tests.fakes.slack import FakeSlack
from tests.integration.pipeline_helpers import ASKBOX


def run(fake: FakeSlack, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("SLACK_")}
    base.update(SLACK_BOT_TOKEN=fake.bot_token, SLACK_APP_TOKEN=fake.app_token, ASKBOX_SLACK_API_URL=fake.api_url)
    base.update(env)
    return subprocess.run([ASKBOX, "slack", *args], env=base, capture_output=True, text=True, timeout=60)


def test_check_passes_with_the_manifests_scopes() -> None:
    with FakeSlack(scopes=[*SCOPES, "users:read"]) as fake:
        done = run(fake, "check")
    assert done.returncode == 0, done.stderr
    assert "ok: bot token: askbox (U0FAKEBOT01)" in done.stdout
    assert "ok: app token: Socket Mode connections open" in done.stdout
    assert "scope `users:read` is granted but askbox does not use it" in done.stdout  # said, not a problem
    assert "ok: askbox's Slack app is set up" in done.stdout


def test_check_names_each_problem_and_its_fix() -> None:
    with FakeSlack(scopes=[s for s in SCOPES if s not in ("commands", "assistant:write")]) as fake:
        missing = run(fake, "check")
        bad_token = run(fake, "check", SLACK_BOT_TOKEN="xoxb-not-a-token")
        no_app_token = run(fake, "check", SLACK_APP_TOKEN="")
        bad_app_token = run(fake, "check", SLACK_APP_TOKEN="xapp-1-A0-unknown")
        http = run(fake, "check", "--http", SLACK_APP_TOKEN="")
    assert missing.returncode == 1
    problems = [line for line in missing.stderr.splitlines() if line.startswith("problem:")]
    assert problems == [
        "problem: missing scope `assistant:write` (assistant.threads.setSuggestedPrompts (the Messages tab's "
        "prompts)): reinstall the app from `askbox slack manifest`",
        "problem: missing scope `commands` (/askbox and the message shortcut): reinstall the app from "
        "`askbox slack manifest`",
    ]
    assert bad_token.returncode == 1 and "SLACK_BOT_TOKEN is refused by Slack (invalid_auth)" in bad_token.stderr
    assert no_app_token.returncode == 1 and "SLACK_APP_TOKEN is not set: Socket Mode needs" in no_app_token.stderr
    assert (
        bad_app_token.returncode == 1
        and "SLACK_APP_TOKEN is refused for Socket Mode (invalid_auth)" in bad_app_token.stderr
    )
    assert "SLACK_APP_TOKEN" not in http.stderr  # HTTP mode has no app token to check


def test_manifest_command_prints_json_and_the_create_link() -> None:
    with FakeSlack() as fake:
        done = run(fake, "manifest", "--http", "https://askbox.example.com/slack/events")
        bad = run(fake, "manifest", "--http", "askbox.example.com")
    app = json.loads(done.stdout)
    assert app["settings"]["event_subscriptions"]["request_url"] == "https://askbox.example.com/slack/events"
    assert "https://api.slack.com/apps?new_app=1&manifest_json=" in done.stderr
    assert bad.returncode == 2 and "--http takes the URL Slack posts to" in bad.stderr
