"""The fake Slack against the REAL slack_sdk WebClient / ChatStream / SocketModeClient and
the REAL slack_bolt App (Socket Mode and HTTP mode).

If these pass, the fake speaks enough Slack for askbox's own tests to trust it, and its
strictness (required args, tiers, streams, signatures) is what those tests run into.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier

from tests.fakes.slack import FIXTURES, RESET, FakeSlack, ManualClock, signed_request

CHANNEL = "C0CHANNEL01"
OTHER_CHANNEL = "C0CHANNEL02"
ASKER = "U0ASKER0001"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # slack_sdk reads HTTPS_PROXY/HTTP_PROXY itself and ignores NO_PROXY: a proxy in the
    # environment would swallow our loopback calls.
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture()
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_user(ASKER, name="asker")
        yield fake


@pytest.fixture()
def client(fake: FakeSlack) -> WebClient:
    return WebClient(token=fake.bot_token, base_url=fake.api_url)


def error_of(call: Any) -> dict[str, Any]:
    with pytest.raises(SlackApiError) as caught:
        call()
    return caught.value.response.data


def question(fake: FakeSlack, text: str = "where is main()?", channel: str = CHANNEL) -> str:
    return fake.add_message(channel, text, user=ASKER).ts


# --------------------------------------------------------------------------- fixtures & auth


def test_method_descriptions_are_copied_with_their_licence() -> None:
    assert (FIXTURES / "LICENSE.md").read_text().startswith("MIT License")
    assert "slack-ruby/slack-api-ref" in (FIXTURES / "SOURCE.md").read_text()
    fake = FakeSlack()
    assert len(fake.methods) == 23  # 16, and issue 19's agents.sessions.*, views.*, setSuggestedPrompts, getPermalink
    assert fake.methods["chat.startStream"].tier == "t2"
    assert fake.methods["chat.update"].tier == "t3"
    assert "message_not_in_streaming_state" in fake.methods["chat.appendStream"].errors


def test_api_url_looks_like_slacks(fake: FakeSlack) -> None:
    assert fake.api_url.startswith("http://127.0.0.1:") and fake.api_url.endswith("/api/")


def test_tokens_are_checked_like_slack(fake: FakeSlack, client: WebClient) -> None:
    assert error_of(lambda: WebClient(base_url=fake.api_url).auth_test())["error"] == "not_authed"
    assert error_of(lambda: WebClient(token="xoxb-wrong", base_url=fake.api_url).auth_test())["error"] == "invalid_auth"
    app_client = WebClient(token=fake.app_token, base_url=fake.api_url)
    assert error_of(lambda: app_client.chat_postMessage(channel=CHANNEL, text="x"))["error"] == "not_allowed_token_type"
    assert error_of(lambda: client.apps_connections_open(app_token=fake.bot_token))["error"] == "not_allowed_token_type"

    me = client.auth_test()
    assert (me["user_id"], me["bot_id"], me["team_id"]) == (fake.bot_user_id, fake.bot_id, fake.team_id)
    url = client.apps_connections_open(app_token=fake.app_token)["url"]
    assert url.startswith(f"ws://127.0.0.1:{fake.ws_port}/link/?ticket=")
    # Authorization header wins; the token never appears in the recorded args.
    assert all("token" not in c.args for c in fake.calls())
    assert fake.calls("apps.connections.open")[-1].token == fake.app_token


def test_unknown_method_and_missing_arguments(fake: FakeSlack, client: WebClient) -> None:
    assert error_of(lambda: client.api_call("chat.nope"))["error"] == "unknown_method"

    missing = error_of(lambda: client.api_call("chat.postMessage", json={"text": "hi"}))
    assert missing["error"] == "invalid_arguments"
    assert missing["response_metadata"]["messages"] == ["[ERROR] missing required field: channel"]

    form = error_of(lambda: client.api_call("reactions.add", params={"channel": CHANNEL}))
    assert form["response_metadata"]["messages"] == [
        "[ERROR] missing required field: name",
        "[ERROR] missing required field: timestamp",
    ]
    assert fake.calls("reactions.add")[-1].encoding == "form"

    # users.info does not take JSON (no json_input_supported): Slack drops the body.
    dropped = error_of(lambda: client.api_call("users.info", json={"user": ASKER}))
    assert "missing required field: user" in dropped["response_metadata"]["messages"][0]
    assert "does not accept JSON" in dropped["response_metadata"]["messages"][-1]

    typed = error_of(lambda: client.api_call("files.getUploadURLExternal", params={"filename": "a", "length": "ten"}))
    assert "length" in typed["response_metadata"]["messages"][0]

    parent = question(fake)
    too_many = error_of(
        lambda: client.assistant_threads_setStatus(
            channel_id=CHANNEL, thread_ts=parent, status="thinking", loading_messages=[f"m{i}" for i in range(11)]
        )
    )
    assert too_many["response_metadata"]["messages"] == ["[ERROR] no more than 10 items allowed: loading_messages"]


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_text_and_block_limits(fake: FakeSlack, client: WebClient) -> None:
    assert client.chat_postMessage(channel=CHANNEL, text="x" * 40_000)["ok"]
    assert error_of(lambda: client.chat_postMessage(channel=CHANNEL, text="x" * 40_001))["error"] == "msg_too_long"
    assert client.chat_postMessage(channel=CHANNEL, markdown_text="y" * 12_000)["ok"]
    too_long_md = error_of(lambda: client.chat_postMessage(channel=CHANNEL, markdown_text="y" * 12_001))
    assert too_long_md["error"] == "msg_too_long"
    conflict = error_of(lambda: client.chat_postMessage(channel=CHANNEL, text="a", markdown_text="b"))
    assert conflict["error"] == "markdown_text_conflict"
    assert error_of(lambda: client.chat_postMessage(channel=CHANNEL))["error"] == "no_text"
    assert error_of(lambda: client.chat_postMessage(channel="general", text="x"))["error"] == "channel_not_found"

    section = {"type": "section", "text": {"type": "mrkdwn", "text": "z" * 3001}}
    bad = error_of(lambda: client.chat_postMessage(channel=CHANNEL, text="fallback", blocks=[section]))
    assert bad["error"] == "invalid_blocks"
    assert bad["response_metadata"]["messages"] == [
        "[ERROR] must be less than 3001 characters [json-pointer:/blocks/0/text/text]"
    ]
    many = [{"type": "divider"}] * 51
    assert (
        error_of(lambda: client.chat_postMessage(channel=CHANNEL, text="f", blocks=many))["error"] == "invalid_blocks"
    )


# --------------------------------------------------------------------------- messages & threads


def test_thread_post_update_delete_and_replies(fake: FakeSlack, client: WebClient) -> None:
    parent = question(fake)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*queued*, position 1"}}]
    status = client.chat_postMessage(channel=CHANNEL, thread_ts=parent, text="queued", blocks=blocks)
    assert status["message"]["bot_id"] == fake.bot_id
    # Form-encoded posting (api_call with params) works the same.
    form = client.api_call("chat.postMessage", params={"channel": CHANNEL, "thread_ts": parent, "text": "form!"})
    assert fake.calls("chat.postMessage")[-1].encoding == "form"

    client.chat_update(channel=CHANNEL, ts=status["ts"], text="running")
    client.chat_update(channel=CHANNEL, ts=status["ts"], text="done", blocks=[])
    # A reply to a reply lands in the parent's thread.
    nested = client.chat_postMessage(channel=CHANNEL, thread_ts=form["ts"], text="nested")

    thread = fake.thread(CHANNEL, parent)
    assert [m.text for m in thread] == ["where is main()?", "done", "form!", "nested"]
    updated = thread[1]
    assert (updated.edits, updated.history, updated.is_bot) == (2, ["queued", "running"], True)
    assert fake.get_message(CHANNEL, nested["ts"]).thread_ts == parent

    replies = client.conversations_replies(channel=CHANNEL, ts=nested["ts"])  # any ts of the thread
    assert [m["text"] for m in replies["messages"]] == ["where is main()?", "done", "form!", "nested"]
    assert replies["messages"][0]["reply_count"] == 3
    page = client.conversations_replies(channel=CHANNEL, ts=parent, limit=2)
    assert page["has_more"] is True
    rest = client.conversations_replies(channel=CHANNEL, ts=parent, cursor=page["response_metadata"]["next_cursor"])
    assert [m["text"] for m in rest["messages"]] == ["form!", "nested"]

    client.chat_delete(channel=CHANNEL, ts=form["ts"])
    assert [m.text for m in fake.thread(CHANNEL, parent)] == ["where is main()?", "done", "nested"]
    assert error_of(lambda: client.chat_delete(channel=CHANNEL, ts=form["ts"]))["error"] == "message_not_found"
    assert error_of(lambda: client.chat_update(channel=CHANNEL, ts=parent, text="x"))["error"] == "cant_update_message"
    assert error_of(lambda: client.conversations_replies(channel=CHANNEL, ts="1.000001"))["error"] == "thread_not_found"


def test_reactions_status_ephemeral_and_users(fake: FakeSlack, client: WebClient) -> None:
    parent = question(fake)
    client.reactions_add(channel=CHANNEL, timestamp=parent, name="eyes")
    assert (
        error_of(lambda: client.reactions_add(channel=CHANNEL, timestamp=parent, name="eyes"))["error"]
        == "already_reacted"
    )
    assert (
        error_of(lambda: client.reactions_add(channel=CHANNEL, timestamp=parent, name=":eyes:"))["error"]
        == "invalid_name"
    )
    assert fake.get_message(CHANNEL, parent).reactions == {"eyes": [fake.bot_user_id]}
    client.reactions_remove(channel=CHANNEL, timestamp=parent, name="eyes")
    assert (
        error_of(lambda: client.reactions_remove(channel=CHANNEL, timestamp=parent, name="eyes"))["error"]
        == "no_reaction"
    )
    assert error_of(lambda: client.reactions_remove(name="eyes"))["error"] == "no_item_specified"

    client.assistant_threads_setStatus(channel_id=CHANNEL, thread_ts=parent, status="is reading the repo...")
    assert fake.status(CHANNEL, parent) == "is reading the repo..."
    client.chat_postMessage(channel=CHANNEL, thread_ts=parent, text="answer")
    assert fake.status(CHANNEL, parent) is None  # a reply clears it, as in Slack
    assert fake.status_history(CHANNEL, parent) == ["is reading the repo...", ""]

    eph = client.chat_postEphemeral(channel=CHANNEL, user=ASKER, text="only you", thread_ts=parent)
    assert [m.text for m in fake.ephemerals(CHANNEL)] == ["only you"]
    assert eph["message_ts"] not in [m.ts for m in fake.thread(CHANNEL, parent)]

    assert client.users_info(user=ASKER)["user"]["name"] == "asker"
    assert error_of(lambda: client.users_info(user="U0NOBODY001"))["error"] == "user_not_found"


# --------------------------------------------------------------------------- streaming


def test_start_stream_in_a_channel_needs_a_recipient(fake: FakeSlack, client: WebClient) -> None:
    parent = question(fake)
    no_team = error_of(lambda: client.chat_startStream(channel=CHANNEL, thread_ts=parent, markdown_text="hi"))
    assert no_team["error"] == "missing_recipient_team_id"
    no_user = error_of(
        lambda: client.chat_startStream(channel=CHANNEL, thread_ts=parent, recipient_team_id=fake.team_id)
    )
    assert no_user["error"] == "missing_recipient_user_id"
    stranger = error_of(
        lambda: client.chat_startStream(
            channel=CHANNEL, thread_ts=parent, recipient_team_id=fake.team_id, recipient_user_id="U0NOBODY001"
        )
    )
    assert stranger["error"] == "user_not_found"
    dm_parent = fake.add_message("D0FAKEDM001", "hi bot", user=ASKER).ts
    assert client.chat_startStream(channel="D0FAKEDM001", thread_ts=dm_parent, markdown_text="hi")["ok"]


def test_real_chat_stream_helper_buffers_then_streams(fake: FakeSlack, client: WebClient) -> None:
    parent = question(fake)
    streamer = client.chat_stream(
        channel=CHANNEL,
        thread_ts=parent,
        recipient_team_id=fake.team_id,
        recipient_user_id=ASKER,
        buffer_size=10,
    )
    assert streamer.append(markdown_text="Hello ") is None  # buffered: no call yet
    assert fake.calls("chat.startStream") == []
    streamer.append(markdown_text="world, ")  # 13 >= 10: startStream with the buffer
    streamer.append(markdown_text="it is ")
    streamer.append(markdown_text="streaming.")  # 16: appendStream
    final = streamer.stop(blocks=[{"type": "context", "elements": [{"type": "mrkdwn", "text": "took 3s"}]}])

    stream_calls = [c for c in fake.calls() if c.method.startswith("chat.") and "Stream" in c.method]
    assert [c.method for c in stream_calls] == ["chat.startStream", "chat.appendStream", "chat.stopStream"]
    # ChatStream (slack_sdk 3.48) never sends markdown_text: the text travels as chunks.
    assert all("markdown_text" not in c.args for c in stream_calls)
    assert stream_calls[0].args["chunks"] == [{"type": "markdown_text", "text": "Hello world, "}]
    assert stream_calls[2].args["chunks"] == []  # nothing left in the buffer at stop

    msg = fake.get_message(CHANNEL, streamer.ts)
    assert msg.text == "Hello world, it is streaming."
    assert (msg.stream, msg.thread_ts, msg.blocks[0]["type"]) == ("stopped", parent, "context")
    assert final["message"]["text"] == msg.text

    with pytest.raises(SlackRequestError):  # the helper refuses client-side...
        streamer.append(markdown_text="more")
    late = error_of(lambda: client.chat_appendStream(channel=CHANNEL, ts=streamer.ts, markdown_text="more"))
    assert late["error"] == "message_not_in_streaming_state"  # ...and the fake server-side
    assert error_of(lambda: client.chat_update(channel=CHANNEL, ts=parent, text="x"))["error"] == "cant_update_message"


def test_streams_expire_and_fall_back_to_update() -> None:
    clock = ManualClock()
    with FakeSlack(clock=clock, stream_ttl=300) as fake:
        client = WebClient(token=fake.bot_token, base_url=fake.api_url)
        parent = fake.add_message("D0FAKEDM001", "q", user=ASKER).ts
        ts = client.chat_startStream(channel="D0FAKEDM001", thread_ts=parent, markdown_text="part 1")["ts"]
        busy = error_of(lambda: client.chat_update(channel="D0FAKEDM001", ts=ts, text="x"))
        assert busy["error"] == "streaming_state_conflict"
        clock.advance(299)
        client.chat_appendStream(channel="D0FAKEDM001", ts=ts, markdown_text=", part 2")
        clock.advance(2)
        expired = error_of(lambda: client.chat_appendStream(channel="D0FAKEDM001", ts=ts, markdown_text="!"))
        assert expired["error"] == "message_not_in_streaming_state"
        assert fake.get_message("D0FAKEDM001", ts).stream == "expired"
        client.chat_update(channel="D0FAKEDM001", ts=ts, text="part 1, part 2, the rest")  # the documented fallback
        assert fake.get_message("D0FAKEDM001", ts).text == "part 1, part 2, the rest"

        other = client.chat_startStream(channel="D0FAKEDM001", thread_ts=parent)["ts"]
        assert fake.expire_streams() == [other]
        assert error_of(lambda: client.chat_stopStream(channel="D0FAKEDM001", ts=other))["error"] == (
            "message_not_in_streaming_state"
        )


# --------------------------------------------------------------------------- scripted failures


def test_rate_limited_without_retry_handler(fake: FakeSlack, client: WebClient) -> None:
    fake.rate_limit("chat.postMessage", times=1, retry_after=7)
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel=CHANNEL, text="hi")
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "7"
    assert caught.value.response["error"] == "ratelimited"
    assert client.chat_postMessage(channel=CHANNEL, text="hi")["ok"]
    assert [c.status for c in fake.calls("chat.postMessage")] == [429, 200]


def test_retry_handler_honours_retry_after(fake: FakeSlack) -> None:
    patient = WebClient(
        token=fake.bot_token, base_url=fake.api_url, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)]
    )
    fake.rate_limit("chat.postMessage", times=1, retry_after=1)
    assert patient.chat_postMessage(channel=CHANNEL, text="eventually")["ok"]
    first, second = fake.calls("chat.postMessage")
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 1.0  # waited Retry-After (+ up to 1 s jitter)
    assert [m.text for m in fake.channel_messages(CHANNEL)] == ["eventually"]

    fake.rate_limit("chat.postMessage", times=2, retry_after=0)
    with pytest.raises(SlackApiError) as caught:  # one retry allowed, two 429s: gives up
        patient.chat_postMessage(channel=CHANNEL, text="never")
    assert caught.value.response.status_code == 429


def test_connection_reset_after_the_post_leaves_the_client_unsure(fake: FakeSlack) -> None:
    """A reset after Slack posted: slack_sdk raises (it got no answer), yet the message is
    there; slack_sdk's own ConnectionErrorRetryHandler (a default) then posts it a second time."""
    client = WebClient(token=fake.bot_token, base_url=fake.api_url, retry_handlers=[])
    fake.connection_reset("chat.postMessage", times=1)
    with pytest.raises(ConnectionResetError):
        client.chat_postMessage(channel=CHANNEL, text="accepted, answer lost")
    assert [m.text for m in fake.channel_messages(CHANNEL)] == ["accepted, answer lost"]
    assert [c.status for c in fake.calls("chat.postMessage")] == [RESET]

    fake.connection_reset("chat.postMessage", times=1, after_effect=False)
    with pytest.raises(ConnectionResetError):
        client.chat_postMessage(channel=CHANNEL, text="never posted")
    assert [m.text for m in fake.channel_messages(CHANNEL)] == ["accepted, answer lost"]

    retrying = WebClient(token=fake.bot_token, base_url=fake.api_url)
    assert any(isinstance(h, ConnectionErrorRetryHandler) for h in retrying.retry_handlers)
    fake.connection_reset("chat.postMessage", times=1)
    assert retrying.chat_postMessage(channel=CHANNEL, text="posted twice")["ok"]
    assert [m.text for m in fake.channel_messages(CHANNEL)][-2:] == ["posted twice", "posted twice"]


def test_scripted_failures(fake: FakeSlack, client: WebClient) -> None:
    dm_parent = fake.add_message("D0FAKEDM001", "q", user=ASKER).ts
    ts = client.chat_startStream(channel="D0FAKEDM001", thread_ts=dm_parent, markdown_text="a")["ts"]
    fake.fail("chat.appendStream", "message_not_in_streaming_state", times=1)
    scripted = error_of(lambda: client.chat_appendStream(channel="D0FAKEDM001", ts=ts, markdown_text="b"))
    assert scripted["error"] == "message_not_in_streaming_state"
    client.chat_appendStream(channel="D0FAKEDM001", ts=ts, markdown_text="c")
    assert fake.get_message("D0FAKEDM001", ts).text == "ac"

    fake.fail("chat.postMessage", "channel_not_found", when=lambda args: args.get("channel") == OTHER_CHANNEL)
    assert client.chat_postMessage(channel=CHANNEL, text="fine")["ok"]
    assert error_of(lambda: client.chat_postMessage(channel=OTHER_CHANNEL, text="x"))["error"] == "channel_not_found"
    with pytest.raises(ValueError, match="does not document"):
        fake.fail("chat.postMessage", "made_up_error")


def test_tier_enforcement_and_report() -> None:
    clock = ManualClock()
    with FakeSlack(clock=clock, enforce_tiers=True) as fake:
        client = WebClient(token=fake.bot_token, base_url=fake.api_url)
        dm = fake.add_message("D0FAKEDM001", "q", user=ASKER).ts
        for _ in range(20):  # chat.startStream is Tier 2: 20 per minute
            client.chat_startStream(channel="D0FAKEDM001", thread_ts=dm, markdown_text="x")
        over = error_of(lambda: client.chat_startStream(channel="D0FAKEDM001", thread_ts=dm, markdown_text="x"))
        assert over["error"] == "ratelimited"
        assert fake.calls("chat.startStream")[-1].headers["Retry-After"] == "60"
        clock.advance(60)
        assert client.chat_startStream(channel="D0FAKEDM001", thread_ts=dm, markdown_text="x")["ok"]

        for _ in range(3):  # chat.postMessage: per channel, bursts of 3 within a second
            client.chat_postMessage(channel=CHANNEL, text="burst")
        assert error_of(lambda: client.chat_postMessage(channel=CHANNEL, text="4th"))["error"] == "ratelimited"
        assert client.chat_postMessage(channel=OTHER_CHANNEL, text="other channel")["ok"]
        clock.advance(1)
        assert client.chat_postMessage(channel=CHANNEL, text="a second later")["ok"]

        report = fake.rate_report()
        assert report["chat.startStream"].peak_per_minute == 21  # attempts, the 429 included
        assert fake.rate_report(include_rejected=False)["chat.startStream"].peak_per_minute == 20
        assert report["chat.postMessage"].peak_per_second_by_channel == {CHANNEL: 4, OTHER_CHANNEL: 1}
        assert report["chat.postMessage"].peak_per_minute_by_channel[CHANNEL] == 5


def test_tier_violations_reported_without_enforcement(fake: FakeSlack, client: WebClient) -> None:
    parent = question(fake)
    for i in range(21):
        client.reactions_add(channel=CHANNEL, timestamp=parent, name=f"emoji{i}")  # Tier 3: fine
    assert fake.tier_violations() == []
    for i in range(21):
        client.reactions_remove(channel=CHANNEL, timestamp=parent, name=f"emoji{i}")  # Tier 2: 21 > 20
    assert fake.tier_violations() == ["reactions.remove (t2): 21/min > 20"]


# --------------------------------------------------------------------------- files


def test_files_upload_v2_end_to_end(fake: FakeSlack, client: WebClient) -> None:
    parent = question(fake)
    result = client.files_upload_v2(
        channel=CHANNEL,
        thread_ts=parent,
        content="# The long answer\n42\n",
        filename="answer.md",
        initial_comment="The full answer is attached.",
    )
    file_id = result["file"]["id"]
    assert [c.method for c in fake.calls()] == ["files.getUploadURLExternal", "files.completeUploadExternal"]
    assert fake.calls("files.getUploadURLExternal")[0].args["length"] == str(len(b"# The long answer\n42\n"))

    shared = fake.thread(CHANNEL, parent)[-1]
    assert shared.text == "The full answer is attached."
    assert [(f.id, f.name, f.content) for f in shared.files] == [(file_id, "answer.md", b"# The long answer\n42\n")]
    assert fake.file(file_id).shared_in == [(CHANNEL, shared.ts)]
    listed = client.conversations_replies(channel=CHANNEL, ts=parent)["messages"][-1]
    assert listed["files"][0]["size"] == len(b"# The long answer\n42\n")

    pending = client.files_getUploadURLExternal(filename="x.txt", length=3)["file_id"]
    never = error_of(lambda: client.files_completeUploadExternal(files=[{"id": pending}], channel_id=CHANNEL))
    assert never["error"] == "file_not_found"  # bytes never POSTed to the upload URL


# --------------------------------------------------------------------------- Socket Mode with Bolt


def socket_app(fake: FakeSlack, seen: list[dict[str, Any]], ping_interval: float = 10) -> tuple[App, SocketModeHandler]:
    app = App(client=WebClient(token=fake.bot_token, base_url=fake.api_url), signing_secret="unused-in-socket-mode")

    @app.event("app_mention")
    def on_mention(event: dict[str, Any], say: Any, request: Any) -> None:
        seen.append({"event": event, "retry": request.headers.get("x-slack-retry-num", [None])[0]})
        say(text=f"echo: {event['text']}", thread_ts=event.get("thread_ts") or event["ts"])

    @app.event("message")
    def on_message(event: dict[str, Any]) -> None:
        seen.append({"message": event})

    @app.action("cancel_job")
    def on_cancel(ack: Any, body: dict[str, Any], respond: Any) -> None:
        ack()
        seen.append({"action": body["actions"][0]["value"]})
        respond(text=f"Cancelled by <@{body['user']['id']}>", replace_original=False)

    # slack_sdk.socket_mode.builtin.SocketModeClient: no extra dependency, and it talks
    # plain ws:// to any port other than 443.
    handler = SocketModeHandler(app, fake.app_token, ping_interval=ping_interval)
    handler.connect()
    return app, handler


def test_bolt_socket_mode_receives_mention_acks_and_replies(fake: FakeSlack) -> None:
    seen: list[dict[str, Any]] = []
    _, handler = socket_app(fake, seen)
    try:
        fake.wait_connections(1)
        mention = fake.app_mention(ASKER, CHANNEL, "what does main() do?")
        envelope = fake.push_event(mention)
        ack = fake.wait_ack(envelope, timeout=5)
        assert ack.payload is None and ack.connection == envelope.sent_to[0]

        reply = fake.wait_until(
            lambda: len(fake.thread(CHANNEL, mention["ts"])) == 2 and fake.thread(CHANNEL, mention["ts"])
        )
        assert reply[1].text == f"echo: <@{fake.bot_user_id}> what does main() do?"
        assert reply[1].is_bot and reply[0].user == ASKER
        assert seen[0]["retry"] == "0"  # Slack says retry_attempt 0 on first delivery

        retried = fake.redeliver(envelope, retry_reason="timeout")
        fake.wait_ack(retried)
        fake.wait_until(lambda: len(seen) == 2)
        assert seen[1]["retry"] == "1" and seen[1]["event"]["ts"] == mention["ts"]
        assert retried.event_id == envelope.event_id
        third = fake.push_event(mention, retry_attempt=2, retry_reason="http_error", event_id=envelope.event_id)
        fake.wait_ack(third)
        fake.wait_until(lambda: len(seen) == 3)
        assert seen[2]["retry"] == "2" and third.body["retry_reason"] == "http_error"

        # Bolt ignores the bot's own messages (modern bot messages carry no subtype)...
        own = fake.push_event(fake.bot_message(CHANNEL, "my own answer"))
        fake.wait_ack(own)
        # ...but not a human's DM.
        dm = fake.push_event(fake.dm(ASKER, "hello in private"))
        fake.wait_ack(dm)
        fake.wait_until(lambda: any("message" in s for s in seen))
        assert [s["message"]["text"] for s in seen if "message" in s] == ["hello in private"]
        assert fake.calls("apps.connections.open")[0].token == fake.app_token
    finally:
        handler.close()


def test_interactive_button_is_acked_and_responded(fake: FakeSlack) -> None:
    seen: list[dict[str, Any]] = []
    app, handler = socket_app(fake, seen)
    try:
        fake.wait_connections(1)
        parent = question(fake)
        button = {
            "type": "button",
            "action_id": "cancel_job",
            "text": {"type": "plain_text", "text": "Cancel"},
            "value": "job-1",
        }
        status = app.client.chat_postMessage(
            channel=CHANNEL, thread_ts=parent, text="queued", blocks=[{"type": "actions", "elements": [button]}]
        )
        envelope = fake.push_interactive(fake.block_actions(ASKER, CHANNEL, status["ts"], "cancel_job", "job-1"))
        fake.wait_ack(envelope)
        fake.wait_until(lambda: fake.responses)
        assert seen == [{"action": "job-1"}]
        assert fake.responses[0][1]["text"] == f"Cancelled by <@{ASKER}>"
        assert envelope.payload["container"]["thread_ts"] == parent
    finally:
        handler.close()


def test_two_bot_processes_get_one_delivery_each(fake: FakeSlack) -> None:
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    _, h1 = socket_app(fake, first)
    fake.wait_connections(1)
    _, h2 = socket_app(fake, second)
    try:
        ids = fake.wait_connections(2)
        envelope = fake.push_event(fake.app_mention(ASKER, CHANNEL, "only one of you"), to=1)
        assert fake.wait_ack(envelope).connection == ids[1]
        fake.wait_until(lambda: second)
        time.sleep(0.2)  # give a wrong delivery the chance to show up
        assert first == [] and len(second) == 1
        assert len(fake.envelopes()) == 1 and fake.envelopes()[0].sent_to == (ids[1],)
    finally:
        h1.close()
        h2.close()


def test_used_ticket_is_refused(fake: FakeSlack, client: WebClient) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = client.apps_connections_open(app_token=fake.app_token)["url"]
    with connect(url) as ws:
        assert json.loads(ws.recv(timeout=2))["type"] == "hello"
    with pytest.raises(InvalidStatus):
        connect(url)


# --------------------------------------------------------------------------- HTTP mode with Bolt


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_bolt_http_mode_accepts_only_fresh_signed_requests(fake: FakeSlack) -> None:
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    app = App(client=WebClient(token=fake.bot_token, base_url=fake.api_url), signing_secret=secret)
    mentions: list[str] = []

    @app.event("app_mention")
    def on_mention(event: dict[str, Any], say: Any) -> None:
        mentions.append(event["text"])
        say(text="got it", thread_ts=event["ts"])

    # App.start() binds 0.0.0.0; a WSGI server on loopback keeps to 127.0.0.1.
    server = make_server("127.0.0.1", 0, SlackRequestHandler(app), handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/slack/events"
    try:
        mention = fake.app_mention(ASKER, CHANNEL, "over http")
        payload = fake.event_callback(mention)

        assert fake.deliver_http(url, payload, secret, signed=False)[0] == 401
        assert fake.deliver_http(url, payload, secret, timestamp=int(time.time()) - 301)[0] == 401
        assert fake.deliver_http(url, payload, "wrong-secret")[0] == 401
        assert mentions == []

        status, _ = fake.deliver_http(url, payload, secret)
        assert status == 200
        fake.wait_until(lambda: len(fake.thread(CHANNEL, mention["ts"])) == 2)
        assert mentions == [mention["text"]]
        assert fake.thread(CHANNEL, mention["ts"])[1].text == "got it"
    finally:
        server.shutdown()
        server.server_close()


def test_signed_request_matches_slack_sdk_verifier() -> None:
    body = json.dumps({"type": "event_callback"})
    headers = signed_request(body, "s3cret", timestamp=1_700_000_000)
    verifier = SignatureVerifier("s3cret", clock=type("C", (), {"now": staticmethod(lambda: 1_700_000_100)})())
    assert verifier.is_valid(body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])
    assert not verifier.is_valid(body + " ", headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])
    stale = SignatureVerifier("s3cret", clock=type("C", (), {"now": staticmethod(lambda: 1_700_000_301)})())
    assert not stale.is_valid(body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])


# --------------------------------------------------------------------------- event builders


def test_event_builders_look_like_slacks(fake: FakeSlack) -> None:
    parent = question(fake)
    reply = fake.message(ASKER, CHANNEL, "and tests?", thread_ts=parent)
    assert reply["channel_type"] == "channel" and reply["parent_user_id"] == ASKER
    assert fake.dm(ASKER, "hi")["channel_type"] == "im"
    own = fake.bot_message(CHANNEL, "answer")
    assert own["bot_id"] == fake.bot_id and "subtype" not in own and own["user"] == fake.bot_user_id
    edit = fake.message_changed(ASKER, CHANNEL, parent, "where is main() now?", "where is main()?")
    assert (edit["subtype"], edit["message"]["ts"], edit["previous_message"]["text"]) == (
        "message_changed",
        parent,
        "where is main()?",
    )
    join = fake.channel_join(ASKER, CHANNEL)
    assert join["subtype"] == "channel_join" and join["text"] == f"<@{ASKER}> has joined the channel"
    mention = fake.app_mention(ASKER, CHANNEL, "hi", thread_ts=parent)
    assert mention["blocks"][0]["elements"][0]["elements"][0] == {"type": "user", "user_id": fake.bot_user_id}
    outer = fake.event_callback(mention)
    assert outer["event_id"].startswith("Ev") and outer["authorizations"][0]["user_id"] == fake.bot_user_id
    assert fake.event_callback(mention)["event_id"] != outer["event_id"]

    fake.record_event(edit)  # an edit Slack reports also edits the stored message
    assert fake.get_message(CHANNEL, parent).edits == 1


def test_disconnect_and_drop_make_the_client_reconnect_with_a_new_ticket(fake: FakeSlack) -> None:
    seen: list[dict[str, Any]] = []
    # The builtin client notices a closed socket only in its monitor, every ping_interval.
    _, handler = socket_app(fake, seen, ping_interval=0.5)
    try:
        (first,) = fake.wait_connections(1)
        fake.disconnect("refresh_requested")
        fake.wait_until(lambda: fake.connection_ids and fake.connection_ids[0] != first)
        assert len(fake.calls("apps.connections.open")) == 2

        (second,) = fake.connection_ids
        fake.drop(0)
        fake.wait_until(lambda: fake.connection_ids and fake.connection_ids[0] != second)
        assert len(fake.calls("apps.connections.open")) == 3

        envelope = fake.push_event(fake.app_mention(ASKER, CHANNEL, "still there?"))
        assert fake.wait_ack(envelope).connection == fake.connection_ids[0]
    finally:
        handler.close()
