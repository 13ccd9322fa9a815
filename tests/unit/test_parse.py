import pytest

from bot.parse import parse


def test_mention_and_options_are_removed():
    p = parse("<@U0BOT> repo=web agent=gemini model=gemini-2.5-pro how does   retry work?")
    assert (p.text, p.repo, p.agent, p.model, p.fresh, p.help) == (
        "how does retry work?",
        "web",
        "gemini",
        "gemini-2.5-pro",
        False,
        False,
    )


@pytest.mark.parametrize("text", ["<@U0BOT> fresh why?", "<@U0BOT> why? fresh", "<@U0BOT> FRESH why?"])
def test_fresh_at_either_end(text):
    p = parse(text)
    assert p.fresh and p.text == "why?"


def test_fresh_inside_a_sentence_is_just_a_word():
    p = parse("<@U0BOT> is the cache fresh enough here?")
    assert not p.fresh and p.text == "is the cache fresh enough here?"


@pytest.mark.parametrize("text", ["<@U0BOT>", "<@U0BOT> help", "<@U0BOT|askbox>  ?", "<@U0BOT> fresh"])
def test_help(text):
    assert parse(text).help


def test_option_lookalikes_inside_words_stay():
    assert parse("<@U0BOT> what is myrepo=x?").repo is None
