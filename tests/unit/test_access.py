"""The access policy: which repositories a channel, a DM, a shared channel or the terminal
may ask about; the cache scope; the setting as the bot and worker read it."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from jobs.access import AccessRule, cache_scope, may_ask, visible
from jobs.cache import cache_key
from jobs.question import Origin
from jobs.settings import JobSettings

REPOS = {"web": "/srv/web", "api": "/srv/api", "secret": "/srv/secret"}
CHANNEL_REPOS = {"C0WEB": "web", "C0SECRET": "secret"}
POLICY = {
    "secret": AccessRule(channels=("C0VAULT",), users=("U0ALICE",)),
    "api": AccessRule(channels=("*",), dms=True),
}


def slack(channel: str, user: str = "U0BOB", shared: bool = False) -> Origin:
    return Origin(kind="slack", user=user, team="T1", channel=channel, shared=shared)


def seen(origin: Origin, policy=POLICY) -> set[str]:
    return set(visible(REPOS, origin, policy, CHANNEL_REPOS))


def test_without_a_policy_a_channel_sees_its_own_repo_only_and_dms_the_unbound_ones():
    assert seen(slack("C0WEB"), {}) == {"web"}
    assert seen(slack("C0OTHER"), {}) == set()
    # web and secret are channels' own (ASKBOX_CHANNEL_REPOS): not open to every DM.
    assert seen(slack("D0BOB"), {}) == {"api"}
    assert seen(Origin(kind="terminal", user="ops"), {}) == {"web", "api", "secret"}


def test_a_policy_opens_and_restricts():
    assert seen(slack("C0WEB")) == {"web", "api"}  # api: every channel
    assert seen(slack("C0OTHER")) == {"api"}
    assert seen(slack("D0BOB")) == {"api"}  # secret's rule says no DMs; web is C0WEB's, no rule opens it
    assert seen(slack("C0VAULT")) == {"api"}  # bob is not among secret's users
    assert seen(slack("C0VAULT", user="U0ALICE")) == {"api", "secret"}
    # Even its own channel (ASKBOX_CHANNEL_REPOS) asks about secret only as one of its users.
    assert seen(slack("C0SECRET")) == {"api"} and "secret" in seen(slack("C0SECRET", user="U0ALICE"))


def test_a_channel_bound_repo_reaches_dms_only_through_a_rule():
    assert seen(slack("D0BOB"), {"web": AccessRule(dms=True)}) == {"web", "api"}
    assert seen(slack("D0BOB"), {"*": AccessRule(dms=True)}) == {"web", "api", "secret"}  # the operator's "*"
    assert seen(slack("D0BOB"), {"web": AccessRule(channels=("C0OTHER",))}) == {"api"}  # a rule, but no dms


def test_the_star_rule_covers_repos_without_their_own():
    policy = {"*": AccessRule(channels=("C0ALL",)), "secret": AccessRule()}
    assert seen(slack("C0ALL"), policy) == {"web", "api"}
    assert seen(slack("D0BOB"), policy) == set()  # "*" says nothing of DMs: refused
    assert seen(slack("C0SECRET"), policy) == {"secret"}  # a channel's own repo


def test_shared_channels_need_an_explicit_channel_or_shared():
    assert seen(slack("C0OTHER", shared=True)) == set()  # api's "*" does not reach Slack Connect
    assert seen(slack("C0WEB", shared=True)) == {"web"}  # its own repo: the operator chose that channel
    opened = {**POLICY, "api": AccessRule(channels=("*",), shared=True)}
    assert seen(slack("C0OTHER", shared=True), opened) == {"api"}
    assert seen(slack("D0EXT", shared=True)) == set()  # a DM from another workspace
    assert seen(slack("D0EXT", shared=True), {"*": AccessRule(dms=True, shared=True)}) == {"web", "api", "secret"}


def test_an_origin_without_a_channel_sees_nothing_but_the_terminal_everything():
    assert not may_ask("api", Origin(kind="slack", user="U1"), POLICY, CHANNEL_REPOS)
    assert may_ask("secret", Origin(kind="terminal", user="anyone"), POLICY, CHANNEL_REPOS)


def test_cache_scopes_never_cross_places():
    scopes = {
        cache_scope(o)
        for o in (
            slack("C0A"),
            slack("C0B"),
            slack("D0A", user="U1"),
            slack("D0A", user="U2"),
            Origin(kind="terminal", user="ops"),
            Origin(kind="terminal", user="ops2"),
        )
    }
    assert scopes == {"channel:T1:C0A", "channel:T1:C0B", "dm:T1:U1", "dm:T1:U2", "terminal"}
    assert cache_key("channel:T1:C0A", "web", "c", "gemini", None, "q") != cache_key(
        "channel:T1:C0B", "web", "c", "gemini", None, "q"
    )


def test_the_setting_is_json_with_clear_errors(monkeypatch):
    monkeypatch.setenv("ASKBOX_REPOS", json.dumps(REPOS))
    monkeypatch.setenv("ASKBOX_CHANNEL_REPOS", json.dumps(CHANNEL_REPOS))
    monkeypatch.setenv("ASKBOX_REPO_ACCESS", json.dumps({"secret": {"channels": ["C1"], "users": ["U1"]}, "*": {}}))
    settings = JobSettings()
    assert settings.repo_access["secret"] == AccessRule(channels=("C1",), users=("U1",))
    assert settings.channel_repos == CHANNEL_REPOS
    monkeypatch.setenv("ASKBOX_REPO_ACCESS", json.dumps({"secrt": {"channels": ["C1"]}}))
    with pytest.raises(ValidationError, match="'secrt', not in ASKBOX_REPOS"):
        JobSettings()
    monkeypatch.setenv("ASKBOX_REPO_ACCESS", json.dumps({"secret": {"chanels": ["C1"]}}))
    with pytest.raises(ValidationError, match="chanels"):
        JobSettings()


def test_a_bad_policy_stops_the_cli_naming_the_variable(monkeypatch, capsys):
    from bot.cli import main

    monkeypatch.setenv("ASKBOX_REPO_ACCESS", json.dumps({"web": {"dms": "sometimes"}}))
    assert main(["sandbox", "run", "--", "true"]) == 2
    assert "ASKBOX_REPO_ACCESS" in capsys.readouterr().err
