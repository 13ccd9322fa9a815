"""The pure parts of issue 19's Slack surfaces: session titles, feedback button values, the
modal's checks, the Messages tab's prompts, `/askbox repos` and `help`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from bot import commands, home, shortcut
from bot.ingress import refusal, refused
from jobs.settings import JobSettings
from jobs.slack.agent_session import TITLE_CHARS, status_after, title_of
from jobs.slack.blocks import FEEDBACK_ACTION, feedback_actions, feedback_vote

CHANNEL, OPEN, EMPTY = "C0CHAN00001", "C0OPEN00001", "C0EMPTY0001"


def ingress(**jobs: object) -> SimpleNamespace:
    """What the surfaces read of an Ingress: its settings (no Redis, no Slack)."""
    settings = JobSettings(
        repos={"demo": "/tmp", "web": "/tmp", "secret": "/tmp"},
        channel_repos={CHANNEL: "demo"},
        repo_access={
            "web": {"channels": [CHANNEL, OPEN], "dms": True},
            "demo": {"channels": [OPEN]},
            "secret": {"users": ["U0ALICE0001"], "dms": True},
        },
        **jobs,
    )
    return SimpleNamespace(settings=SimpleNamespace(jobs=settings))


def test_session_titles_are_the_question_shortened() -> None:
    assert title_of("  how   does retry\twork?\nmore lines") == "how does retry work?"
    assert title_of("first line\nsecond") == "first line"
    long = title_of("word " * 60)
    assert len(long) <= TITLE_CHARS and long.endswith("…") and not long.endswith(" …")
    assert title_of("") == "Question"
    assert (status_after("answer"), status_after("cancelled"), status_after("infra")) == ("active", "closed", "closed")


def test_feedback_buttons_carry_verdict_and_job() -> None:
    [element] = feedback_actions("job-1")["elements"]
    assert element["type"] == "feedback_buttons" and element["action_id"] == FEEDBACK_ACTION
    up = {"action_id": FEEDBACK_ACTION, "value": element["positive_button"]["value"]}
    down = {"action_id": FEEDBACK_ACTION, "value": element["negative_button"]["value"]}
    assert (feedback_vote(up), feedback_vote(down)) == (("up", "job-1"), ("down", "job-1"))
    assert feedback_vote({"action_id": "askbox_feedback_up", "value": "job-0"}) == ("up", "job-0")  # older answers
    for bad in (
        {"action_id": FEEDBACK_ACTION, "value": "sideways:job"},
        {"action_id": FEEDBACK_ACTION, "value": "up:"},
        {"action_id": "something_else", "value": "up:job"},
    ):
        assert feedback_vote(bad) is None


def test_refusals_name_only_what_is_open() -> None:
    assert refused("nope", {"demo": 1}) and refused(None, {}) and not refused(None, {"demo": 1})
    assert refusal("nope", {"web": 1, "demo": 1}) == (
        "I can't answer about the repository `nope` here. Repositories you may ask about here: `demo`, `web`."
    )
    assert refusal(None, {}) == "No repository is open here."


def test_messages_tab_prompts_are_about_visible_repositories_only() -> None:
    prompts = home.prompts_for(ingress(), "T0", "U0BOB000001", "D0DM0000001")
    assert 1 <= len(prompts) <= 4
    assert all("`web`" in p["title"] and p["message"].startswith("repo=web ") for p in prompts)  # not secret
    assert any("secret" in p["title"] for p in home.prompts_for(ingress(), "T0", "U0ALICE0001", "D0DM0000001"))


def test_where_each_repository_may_be_asked_about() -> None:
    surfaces = ingress()
    assert home.places(surfaces, "web", "U0BOB000001") == f"<#{CHANNEL}>, <#{OPEN}>, my Messages tab"
    assert home.places(surfaces, "demo", "U0BOB000001") == f"<#{CHANNEL}>, <#{OPEN}>"
    assert home.places(surfaces, "secret", "U0BOB000001") is None


def test_slash_repos_and_help() -> None:
    said: list[str] = []
    respond = lambda text: said.append(text)  # noqa: E731
    surfaces = ingress()
    assert (
        commands.run(surfaces, {"text": "repos", "user_id": "U0BOB000001", "channel_id": CHANNEL}, respond) == "repos"
    )
    assert commands.run(surfaces, {"text": "  ", "user_id": "U0BOB000001", "channel_id": EMPTY}, respond) == "help"
    assert commands.run(surfaces, {"text": "repos", "user_id": "U0BOB000001", "channel_id": EMPTY}, respond) == "repos"
    assert said == [
        "You may ask about: `demo` (this channel's default), `web`.",
        commands.USAGE,
        "No repository is open here.",
    ]


def _submission(question: str, repo: str | None, meta: dict | str) -> dict:
    values: dict = {shortcut.QUESTION_BLOCK: {shortcut.QUESTION_INPUT: {"value": question}}}
    if repo is not None:
        values[shortcut.REPO_BLOCK] = {shortcut.REPO_INPUT: {"selected_option": {"value": repo}}}
    return {
        "user": {"id": "U0BOB000001"},
        "team": {"id": "T0"},
        "view": {
            "id": "V0MODAL0001",
            "private_metadata": meta if isinstance(meta, str) else json.dumps(meta),
            "state": {"values": values},
        },
    }


@pytest.mark.parametrize(
    ("question", "repo", "meta", "error"),
    [
        ("", "web", {"c": OPEN, "m": "1.000001", "t": "1.000001"}, {"question": "Write a question."}),
        (
            "why?",
            "secret",
            {"c": OPEN, "m": "1.000001", "t": "1.000001"},
            {"repo": "Pick one of the repositories offered."},
        ),
        ("why?", "web", "{not json", {"question": "This form is out of date: open it again from the message."}),
        ("why?", "web", {"c": EMPTY, "m": "1.000001", "t": "1.000001"}, {"repo": "No repository is open here."}),
    ],
)
def test_a_modal_submission_is_checked_again(question, repo, meta, error) -> None:
    errors, asked = shortcut.submitted(ingress(), _submission(question, repo, meta))
    assert asked is None and errors == error


def test_a_modal_submission_quotes_the_message_and_is_one_question_per_modal() -> None:
    meta = {"c": OPEN, "m": "1.000002", "t": "1.000001", "a": "U0CAROL0001", "x": "Traceback\n  KeyError: 'x'"}
    errors, asked = shortcut.submitted(ingress(), _submission("where is this raised?", "web", meta))
    assert errors == {} and asked is not None
    assert asked.repo == "web" and asked.origin.thread_ts == "1.000001" and asked.origin.message_ts == "1.000002"
    assert (
        asked.context == "\n\nThe message this question is about from <@U0CAROL0001>:\n> Traceback\n>   KeyError: 'x'"
    )
    again = shortcut.submitted(ingress(), _submission("where is this raised?", "web", meta))[1]
    assert again is not None and (again.claim, again.job_id) == (asked.claim, asked.job_id)  # the view's id
