"""The Slack client's kept-alive connections (jobs/slack/keep_alive.py) against the fake
Slack: one connection for many calls, a connection the server closed while idle replaced
without a failed call, and the retry rules unchanged (a post whose answer was lost is
never sent again; one that never went out is)."""

from __future__ import annotations

import socket
from urllib.error import URLError

import pytest
from slack_sdk.errors import SlackApiError

from jobs.slack.web_api import ambiguous, slack_client
from tests.fakes.slack import FakeSlack

CHANNEL = "C0KEEPALIVE"


@pytest.fixture()
def fake():
    with FakeSlack() as slack:
        yield slack


def test_many_calls_share_one_connection(fake: FakeSlack) -> None:
    client = slack_client(fake.bot_token, fake.api_url)
    for i in range(20):
        client.chat_postMessage(channel=CHANNEL, text=f"message {i}")
    with pytest.raises(SlackApiError):  # an error answer does not cost the connection either
        client.chat_update(channel=CHANNEL, ts="1.000001", text="x")
    assert len(fake.channel_messages(CHANNEL)) == 20
    assert fake.connections_accepted == 1 and client.connections_opened == 1


def test_a_connection_closed_while_idle_is_replaced_without_a_failed_call(fake: FakeSlack) -> None:
    client = slack_client(fake.bot_token, fake.api_url)
    client.chat_postMessage(channel=CHANNEL, text="before")
    assert fake.close_idle_connections() == 1
    client.chat_postMessage(channel=CHANNEL, text="after")  # not an ambiguous failure: a fresh connection
    assert [m.text for m in fake.channel_messages(CHANNEL)] == ["before", "after"]
    assert client.connections_opened == 2 and [c.status for c in fake.calls("chat.postMessage")] == [200, 200]


def test_a_post_whose_answer_was_lost_is_not_sent_again(fake: FakeSlack) -> None:
    client = slack_client(fake.bot_token, fake.api_url)
    client.chat_postMessage(channel=CHANNEL, text="warm")  # on a kept connection from here
    fake.connection_reset("chat.postMessage")  # carried out, then the connection reset
    with pytest.raises(Exception) as lost:
        client.chat_postMessage(channel=CHANNEL, text="once")
    assert ambiguous(lost.value)
    assert [m.text for m in fake.channel_messages(CHANNEL)] == ["warm", "once"]  # once, not twice
    client.chat_postMessage(channel=CHANNEL, text="next")  # and the client goes on
    assert [m.text for m in fake.channel_messages(CHANNEL)][-1] == "next"


def test_a_request_that_never_went_out_is_retried(fake: FakeSlack) -> None:
    with socket.socket() as probe:  # a port nobody listens on: refused while connecting
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = slack_client(fake.bot_token, f"http://127.0.0.1:{port}/api/")
    with pytest.raises(URLError) as refused:
        client.chat_postMessage(channel=CHANNEL, text="nowhere")
    assert not ambiguous(refused.value)
    assert client.connections_opened == 3  # the first try and the handler's two retries
