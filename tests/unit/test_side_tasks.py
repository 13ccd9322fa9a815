"""The side tasks' pure parts: the `agent` keyword on a question, and which tasks run."""

from __future__ import annotations

import pytest

from jobs.question import Origin, Question
from jobs.side_tasks.settings import GeminiSettings
from jobs.side_tasks.triage import with_note

ORIGIN = Origin(kind="terminal", user="alice")


@pytest.mark.parametrize("text", ["agent thanks!", "thanks! agent", "AGENT thanks!"])
def test_agent_at_either_end_forces_the_agent(text):
    question = Question(origin=ORIGIN, text=text)
    assert question.force_agent and question.text == "thanks!"


@pytest.mark.parametrize("text", ["which agent runs here?", "agent", "agents thanks"])
def test_agent_elsewhere_or_alone_is_just_a_word(text):
    question = Question(origin=ORIGIN, text=text)
    assert not question.force_agent and question.text == text


def test_the_keyword_survives_the_worker_revalidating_the_job():
    # The worker re-validates the job's JSON: a second leading "agent" is the user's word.
    first = Question(origin=ORIGIN, text="agent agent thanks")
    again = Question.model_validate(first.model_dump(mode="json"))
    assert again.force_agent and again.text == first.text == "agent thanks"


def test_side_tasks_are_off_unless_switched_on():
    assert not any(GeminiSettings().enabled(t) for t in ("triage", "compaction", "summary"))
    on = GeminiSettings(side_tasks=True)
    assert all(on.enabled(t) for t in ("triage", "compaction", "summary"))
    assert not GeminiSettings(side_tasks=True, summary_chars=0).enabled("summary")
    assert not GeminiSettings(side_tasks=True, triage=False).enabled("triage")


def test_a_triaged_reply_says_how_to_reach_the_agent():
    text = with_note("Hello!")
    assert text.startswith("Hello!") and "without reading the code" in text and "`agent`" in text


def test_bad_settings_name_their_variable(monkeypatch):
    monkeypatch.setenv("ASKBOX_SUMMARY_CHARS", "-1")
    with pytest.raises(ValueError, match="summary_chars"):
        GeminiSettings()
