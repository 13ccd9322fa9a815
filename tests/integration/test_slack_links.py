"""Deceptive links and Slack control sequences in an answer, as the asker would receive
them: streamed into the thread (markdown_text) and as the final message (mrkdwn), through
the real publisher and the fake Slack."""

from __future__ import annotations

import time

import redis

from jobs.slack.mrkdwn import deceptive
from sandbox.agents.events import TextDelta
from tests.fakes.slack import FakeSlack
from tests.integration.test_slack_publisher import STREAM_OPTIONS, answer, ask, publisher, replies

EVIL = "https://evil.example/login"
# The agent (steered by a prompt injection in the repo) writes a link that reads as GitHub,
# a Slack-syntax masked link and a channel ping; it arrives in deltas cut mid-link.
ANSWER = f"The code is at [https://github.com/acme/web]({EVIL}).\nOr <{EVIL}|https://github.com/acme/web> <!channel>\n"


def _links(markdown: str) -> list[tuple[str, str]]:
    from jobs.slack.mrkdwn import _LINK

    return [(m.group(2), m.group(3)) for m in _LINK.finditer(markdown)]


def test_streamed_answer_shows_the_real_target(fake: FakeSlack, redis_client: redis.Redis) -> None:
    asked = ask(fake, redis_client)
    pub = publisher(fake, redis_client, asked, streaming=True, options=STREAM_OPTIONS)
    pub.started()
    for cut in range(0, len(ANSWER), 7):  # every 7 characters: cuts land inside the links
        pub.event(TextDelta(text=ANSWER[cut : cut + 7]))
        time.sleep(0.05)
    assert pub.final(answer(ANSWER))
    sent = [c.args.get("markdown_text") or "" for c in fake.calls("chat.startStream") + fake.calls("chat.appendStream")]
    assert len(sent) >= 2  # it was streamed, in pieces
    streamed = "".join(sent)
    # Joined as Slack joins them: no link whose label names another host, no live
    # <url|label> or <!channel>, and the real target is there to read.
    assert not [link for link in _links(streamed) if deceptive(*link)], streamed
    assert "<" not in streamed and EVIL in streamed
    shown = "".join(m.text for m in replies(fake, asked) if m.stream is not None)  # rolled over: 2 messages
    assert "<" not in shown and f"https://github.com/acme/web ([{EVIL}]({EVIL}))" in shown


def test_final_message_shows_the_real_target(fake: FakeSlack, redis_client: redis.Redis) -> None:
    asked = ask(fake, redis_client)
    pub = publisher(fake, redis_client, asked, streaming=False)
    pub.started()
    assert pub.final(answer(ANSWER))
    [message] = [m for m in replies(fake, asked) if EVIL in m.text]
    assert f"https://github.com/acme/web (<{EVIL}>)" in message.text
    assert f"<{EVIL}|" not in message.text and "<!channel>" not in message.text
