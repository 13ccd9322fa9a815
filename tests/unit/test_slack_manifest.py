"""`askbox slack manifest`: valid against Slack's own manifest JSON Schema, and asking for
exactly the bot scopes the code needs, derived from the Slack methods and events the code
uses and the scopes their descriptions name (tests/fixtures/slack-api)."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from jsonschema import Draft7Validator

from bot.app import BOT_EVENTS
from bot.manifest import SCOPES, create_link, manifest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SCHEMA = json.loads((FIXTURES / "slack-manifest-schema" / "manifest.schema.2.0.0.json").read_text())
METHODS = {
    p.name.removesuffix(".json"): json.loads(p.read_text()) for p in (FIXTURES / "slack-api" / "methods").glob("*.json")
}
EVENTS = {
    p.name.removesuffix(".json"): json.loads(p.read_text()) for p in (FIXTURES / "slack-api" / "events").glob("*.json")
}
# slack_sdk helpers that call several methods: files_upload_v2 is these two (and a plain upload).
HELPERS = {"files_upload_v2": ("files.getUploadURLExternal", "files.completeUploadExternal")}
# Methods the Bolt app calls on its own (no scope: auth.test; Socket Mode's is the app token's).
FRAMEWORK = {"auth.test", "apps.connections.open"}


def methods_used() -> set[str]:
    """Every Slack method the code of bot/ and jobs/ calls: ``client.chat_postMessage``
    (called or passed on), and a method's name handed to a call ("chat.update" to
    SlackCalls, "chat_postEphemeral" to Ingress.call)."""
    by_attribute = {name.replace(".", "_"): name for name in METHODS}
    found: set[str] = set()
    for path in [*ROOT.joinpath("bot").rglob("*.py"), *ROOT.joinpath("jobs").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute):
                if node.attr in by_attribute:
                    found.add(by_attribute[node.attr])
                found.update(HELPERS.get(node.attr, ()))
            elif isinstance(node, ast.Call):
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        name = by_attribute.get(arg.value, arg.value)
                        if name in METHODS:
                            found.add(name)
    return found


def event_scopes(event: str) -> set[str]:
    """The scopes an event subscription needs: its description's, or for ``message.X``
    the ``X:history`` that the message event's description lists."""
    if event in EVENTS:
        # app_mention's description spells its scope "app_mentions.read"; Slack's name (and
        # the OAuth page's) is app_mentions:read.
        return {s if ":" in s else s.replace(".", ":", 1) for s in EVENTS[event].get("scopes") or ()}
    kind, _, where = event.partition(".")
    assert kind == "message" and f"{where}:history" in EVENTS["message"]["scopes"], f"no description of {event}"
    return {f"{where}:history"}


def scopes_needed(app: dict) -> set[str]:
    needed: set[str] = set()
    for name in methods_used() - FRAMEWORK:
        needed.update(METHODS[name].get("scope", {}).get("bot", ()))
    for event in app["settings"]["event_subscriptions"]["bot_events"]:
        needed |= event_scopes(event)
    if app["features"].get("slash_commands") or app["features"].get("shortcuts"):
        needed.add("commands")  # Slack's rule for both
    return needed


def scope_problems(app: dict) -> list[str]:
    asked = set(app["oauth_config"]["scopes"]["bot"])
    needed = scopes_needed(app)
    return [f"missing {s}" for s in sorted(needed - asked)] + [f"unused {s}" for s in sorted(asked - needed)]


@pytest.mark.parametrize("http", [None, "https://askbox.example.com/slack/events"])
def test_the_manifest_is_valid_against_slacks_schema(http: str | None) -> None:
    app = manifest(http)
    errors = sorted(Draft7Validator(SCHEMA).iter_errors(app), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    assert app["settings"]["socket_mode_enabled"] is (http is None)
    assert "agent_view" in app["features"] and "assistant_view" not in app["features"]
    assert app["features"]["app_home"] == {
        "home_tab_enabled": True,
        "messages_tab_enabled": True,
        "messages_tab_read_only_enabled": False,
    }
    if http:
        assert app["settings"]["event_subscriptions"]["request_url"] == http
        assert app["settings"]["interactivity"]["request_url"] == http
        assert app["features"]["slash_commands"][0]["url"] == http


def test_an_invalid_manifest_is_caught_by_the_schema() -> None:
    """The schema really checks (a validator that accepts anything would pass the test above)."""
    app = manifest()
    app["features"]["shortcuts"][0]["name"] = "A shortcut name far longer than Slack allows"
    app["features"]["assistant_view"] = {"nonsense": True}
    assert len(list(Draft7Validator(SCHEMA).iter_errors(app))) >= 2


def test_the_scopes_are_exactly_what_the_code_uses() -> None:
    used = methods_used()
    # The derivation sees the calls it must: posts, sessions, views, permalinks, prompts, uploads.
    assert {
        "chat.postMessage",
        "agents.sessions.setStatus",
        "views.open",
        "views.publish",
        "chat.getPermalink",
        "assistant.threads.setSuggestedPrompts",
        "conversations.replies",
        "files.completeUploadExternal",
        "reactions.add",
    } <= used, used
    assert "users.info" not in used  # named in tables (budget tiers), never called
    assert scope_problems(manifest()) == []
    assert set(BOT_EVENTS) == set(manifest()["settings"]["event_subscriptions"]["bot_events"])


def test_a_missing_or_unused_scope_fails() -> None:
    app = manifest()
    app["oauth_config"]["scopes"]["bot"] = [s for s in app["oauth_config"]["scopes"]["bot"] if s != "commands"]
    app["oauth_config"]["scopes"]["bot"].append("users:read")
    assert scope_problems(app) == ["missing commands", "unused users:read"]


def test_every_scope_says_why() -> None:
    assert all(reason.strip() for reason in SCOPES.values())


def test_the_create_link_carries_the_manifest() -> None:
    app = manifest()
    link = urlsplit(create_link(app))
    assert (link.scheme, link.netloc, link.path) == ("https", "api.slack.com", "/apps")
    query = parse_qs(link.query)
    assert query["new_app"] == ["1"] and json.loads(query["manifest_json"][0]) == app
