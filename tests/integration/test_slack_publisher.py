"""The Slack publisher against the fake Slack, the real slack_sdk WebClient and a real Redis.

Covers: progress coalescing and Retry-After under a 429 storm, Slack's tiers held by
one budget shared by several publishers (and processes), streaming with rollover and
an expired stream, a 60,000-character answer, every non-answer outcome, and two
publishers racing for one final.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs import keys, outbox
from jobs.destinations import CompositePublisher, MetaPublisher
from jobs.final import Final
from jobs.question import Origin, Question
from jobs.slack.blocks import CANCEL_ACTION, FEEDBACK_ACTION
from jobs.slack.budget import SlackBudget
from jobs.slack.mrkdwn import FILE_THRESHOLD, PART_LIMIT, to_mrkdwn
from jobs.slack.options import SlackOptions
from jobs.slack.settings import SlackSettings
from jobs.slack.thread_final import REACTIONS
from jobs.slack.thread_publisher import SlackPublisher, slack_publisher_for
from jobs.slack.upload import ANSWER_FILENAME
from jobs.slack.web_api import ambiguous, slack_client
from sandbox.agents.events import Started, TextDelta, ToolFinished, ToolStarted
from tests.conftest import REDIS_TEST_URL
from tests.fakes.slack import RESET, FakeSlack, Message
from tests.unit.test_slack_format import _long_answer, _rejoin

CHANNEL = "C0ASKBOX01"
ASKER = "U0ASKER001"
FAST = SlackOptions(
    progress_interval=0.1,
    idle_refresh=1.0,
    append_interval=0.05,
    status_min_interval=0.1,
    tick=0.05,
    final_wait=15.0,
)


@pytest.fixture()
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as slack:
        slack.add_user(ASKER)
        yield slack


@dataclass
class Asked:
    """A question as the bot leaves it: the user's message (with 👀) and a status message
    with a Cancel button in its thread, and the RQ job carrying the status ts."""

    question: Question
    job: Job
    message: Message
    status_ts: str

    @property
    def ts(self) -> str:
        return self.message.ts


def ask(
    fake: FakeSlack,
    redis_client: redis.Redis,
    text: str = "where are retries?",
    *,
    status: bool = True,
    channel: str = CHANNEL,
) -> Asked:
    message = fake.add_message(channel, f"<@{fake.bot_user_id}> {text}", user=ASKER)
    bot = slack_client(fake.bot_token, fake.api_url)
    bot.reactions_add(channel=channel, timestamp=message.ts, name="eyes")
    origin = Origin(
        kind="slack", user=ASKER, team=fake.team_id, channel=channel, thread_ts=message.ts, message_ts=message.ts
    )
    question = Question(origin=origin, text=text)
    job = Job.create(
        "jobs.job.answer_question",
        args=[question.model_dump(mode="json")],
        id=question.id,
        connection=redis_client,
        serializer=JSONSerializer,
    )
    status_ts = ""
    if status:
        posted = bot.chat_postMessage(
            channel=channel,
            thread_ts=message.ts,
            text="Queued (position 1).",
            blocks=[
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": ":hourglass_flowing_sand: Queued (position 1)."},
                },
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "action_id": CANCEL_ACTION,
                            "value": job.id,
                            "style": "danger",
                            "text": {"type": "plain_text", "text": "Cancel"},
                        }
                    ],
                },
            ],
        )
        status_ts = posted["ts"]
        job.meta["slack_status_ts"] = status_ts
    job.save()
    return Asked(question, job, message, status_ts)


def publisher(
    fake: FakeSlack,
    redis_client: redis.Redis,
    asked: Asked,
    *,
    streaming: bool = False,
    options: SlackOptions = FAST,
    budget: SlackBudget | None = None,
) -> SlackPublisher:
    client = slack_client(fake.bot_token, fake.api_url)
    return SlackPublisher(
        client, redis_client, asked.question, asked.job, streaming=streaming, options=options, budget=budget
    )


def answer(text: str, **extra: Any) -> Final:
    return Final(
        kind="answer",
        text=text,
        repo="web",
        commit="0123456789abcdef",
        agent="cursor",
        model="sonnet-4",
        duration=12.5,
        **extra,
    )


def replies(fake: FakeSlack, asked: Asked) -> list[Message]:
    """Bot messages in the thread other than the status message."""
    return [m for m in fake.thread(CHANNEL, asked.ts) if m.is_bot and m.ts != asked.status_ts]


def block_types(message: Message) -> list[str]:
    return [b["type"] for b in message.blocks or []]


def actions(message: Message) -> list[dict[str, Any]]:
    return [e for b in message.blocks or [] if b["type"] in ("actions", "context_actions") for e in b["elements"]]


def context_text(message: Message) -> str:
    return " ".join(e["text"] for b in message.blocks or [] if b["type"] == "context" for e in b["elements"])


def work(pub: SlackPublisher, steps: int, *, pause: float = 0.0, text: str = "") -> None:
    pub.event(Started(model="sonnet-4"))
    for i in range(steps):
        pub.event(ToolStarted(call_id=f"c{i}", tool="read", summary=f"Read src/module_{i}.py"))
        pub.event(ToolFinished(call_id=f"c{i}", tool="read", summary=f"Read src/module_{i}.py", ok=True))
        if text:
            pub.event(TextDelta(text=text))
        if pause:
            time.sleep(pause)


def assert_finished(fake: FakeSlack, asked: Asked, kind: str) -> None:
    """The status message is a one-line final state and the reactions are right."""
    status = fake.get_message(CHANNEL, asked.status_ts)
    assert status is not None and block_types(status) == ["section"], status
    assert not actions(status), "the Cancel button must be gone"
    reactions = fake.get_message(CHANNEL, asked.ts).reactions
    assert reactions == {REACTIONS[kind]: [fake.bot_user_id]}, reactions  # eyes removed


def assert_answer_message(message: Message, job_id: str) -> None:
    assert "web" in context_text(message) and "0123456" in context_text(message)
    assert "cursor/sonnet-4" in context_text(message) and "12.5 s" in context_text(message)
    # Slack's feedback buttons element (issue 19), one action id, the verdict in each value.
    [element] = actions(message)
    assert (element["type"], element["action_id"]) == ("feedback_buttons", FEEDBACK_ACTION)
    assert (element["positive_button"]["value"], element["negative_button"]["value"]) == (
        f"up:{job_id}",
        f"down:{job_id}",
    )


# --------------------------------------------------------------------------- progress and answer


def test_progress_then_answer(fake: FakeSlack, redis_client: redis.Redis) -> None:
    asked = ask(fake, redis_client)
    pub = publisher(fake, redis_client, asked)
    pub.started()
    work(pub, 3, text="Retries are in **jobs/queue.py**.\n")

    def shows_steps() -> bool:
        status = fake.get_message(CHANNEL, asked.status_ts)
        return status is not None and "Read src/module_2.py" in str(status.blocks)

    fake.wait_until(shows_steps, timeout=5)
    status = fake.get_message(CHANNEL, asked.status_ts)
    assert "Working" in status.text and "3 steps" in status.text
    assert [e["action_id"] for e in actions(status)] == [CANCEL_ACTION], "Cancel stays while working"
    assert "*jobs/queue.py*" in str(status.blocks), "the answer's preview, as mrkdwn"
    assert fake.status_history(CHANNEL, asked.ts), "assistant.threads.setStatus was used"
    fake.wait_until(lambda: pub.shown, timeout=2)

    md = "## Retries\n\nThey are in `jobs/queue.py`:\n\n- **infra** faults: *twice*\n\n```python\nRetry(max=2)\n```"
    assert pub.final(answer(md)) is True
    [reply] = replies(fake, asked)
    assert reply.text.startswith("*Retries*\n\nThey are in `jobs/queue.py`:\n\n• *infra* faults: _twice_")
    assert "```\nRetry(max=2)\n```" in reply.text
    assert block_types(reply) == ["section", "context", "context_actions"]
    assert_answer_message(reply, asked.job.id)
    assert_finished(fake, asked, "answer")
    assert fake.get_message(CHANNEL, asked.status_ts).text.startswith(":white_check_mark: Answered · 12s · 3 steps")
    assert fake.status(CHANNEL, asked.ts) is None, "the reply cleared the assistant status"
    assert pub.final(answer("again")) is False
    assert len(replies(fake, asked)) == 1


def test_elapsed_time_moves_while_idle(fake: FakeSlack, redis_client: redis.Redis) -> None:
    asked = ask(fake, redis_client)
    pub = publisher(fake, redis_client, asked, options=FAST.model_copy(update={"idle_refresh": 0.5}))
    pub.started()
    fake.wait_until(lambda: "Working… 2s" in fake.get_message(CHANNEL, asked.status_ts).text, timeout=5)
    pub.close()


def test_posts_its_own_status_message_when_the_bot_left_none(fake: FakeSlack, redis_client: redis.Redis) -> None:
    asked = ask(fake, redis_client, status=False)
    pub = publisher(fake, redis_client, asked)
    pub.started()
    work(pub, 2)
    own = fake.wait_until(lambda: [m for m in replies(fake, asked) if "Working" in m.text], timeout=5)[0]
    assert [e["action_id"] for e in actions(own)] == [CANCEL_ACTION]
    pub.final(answer("It is in jobs/queue.py."))
    own = fake.get_message(CHANNEL, own.ts)
    assert own.text.startswith(":white_check_mark: Answered") and not actions(own)
    assert [m.text for m in replies(fake, asked) if m.ts != own.ts] == ["It is in jobs/queue.py."]


def test_assistant_status_is_reset_before_it_lapses(fake: FakeSlack, redis_client: redis.Redis) -> None:
    asked = ask(fake, redis_client)
    pub = publisher(fake, redis_client, asked, options=FAST.model_copy(update={"status_refresh": 0.3}))
    pub.started()
    time.sleep(1.3)
    pub.close()
    calls = fake.calls("assistant.threads.setStatus")
    assert len(calls) >= 3
    gaps = [b.time - a.time for a, b in pairwise(calls)]
    assert all(g >= 0.25 for g in gaps), gaps  # refreshed, not hammered


def test_assistant_status_refused_is_not_retried(fake: FakeSlack, redis_client: redis.Redis) -> None:
    asked = ask(fake, redis_client)
    fake.fail("assistant.threads.setStatus", "channel_not_found")
    pub = publisher(fake, redis_client, asked, options=FAST.model_copy(update={"status_refresh": 0.2}))
    pub.started()
    work(pub, 3, pause=0.2)
    pub.final(answer("ok"))
    assert len(fake.calls("assistant.threads.setStatus")) == 1
    assert [m.text for m in replies(fake, asked)] == ["ok"]


# --------------------------------------------------------------------------- rate limits


def test_progress_coalesces_under_a_429_storm(fake: FakeSlack, redis_client: redis.Redis) -> None:
    asked = ask(fake, redis_client)
    fake.rate_limit("chat.update", times=3, retry_after=1)
    fake.rate_limit("assistant.threads.setStatus", times=3, retry_after=1)
    pub = publisher(fake, redis_client, asked, options=FAST.model_copy(update={"progress_interval": 0.02}))
    pub.started()
    events = 0
    for i in range(200):
        work(pub, 1, text=f"part {i} ")
        events += 3
        time.sleep(0.02)
    fake.rate_limit("chat.postMessage", times=2, retry_after=1)  # the final itself is rate limited too
    assert pub.final(answer("The answer."))

    updates = fake.calls("chat.update")
    assert len(updates) < events // 10, f"{len(updates)} edits for {events} events: not coalesced"
    assert [c.status for c in updates[:3]] == [429, 429, 429]
    # Retry-After honoured: after a 429 nobody calls the method again for a second.
    for calls in (updates, fake.calls("assistant.threads.setStatus"), fake.calls("chat.postMessage")):
        for before, after in pairwise(calls):
            if before.status == 429:
                assert after.time - before.time >= 0.95, (before.method, after.time - before.time)
    # Coalesced, not queued: each edit carries the newest state, never an older one.
    working = [c.args["text"] for c in updates if "Working" in c.args["text"]]
    steps = [int(m[1]) if (m := re.search(r" · (\d+) step", text)) else 0 for text in working]  # none yet: 0
    assert steps == sorted(steps) and len(set(steps)) == len(steps), steps
    assert [c.status for c in updates if "Working" in c.args["text"]][-1] == 200
    assert [m.text for m in replies(fake, asked)] == ["The answer."], "the final is never lost"
    assert_finished(fake, asked, "answer")


def test_tiers_hold_across_publishers_sharing_one_budget(fake: FakeSlack, redis_client: redis.Redis) -> None:
    # Small limits so a few seconds exceed them many times over; the fake enforces the
    # same numbers and reports any sliding minute above them.
    limits = {"chat.update": 10, "assistant.threads.setStatus": 5}
    fake.tier_limits.update(limits)
    fake.enforce_tiers = True
    asks = [ask(fake, redis_client, f"question {i}") for i in range(3)]
    fake.clear_calls()
    overrides = {method: (n, 60.0) for method, n in limits.items()}
    pubs = [
        publisher(
            fake,
            redis_client,
            a,
            budget=SlackBudget(redis_client, fake.team_id, overrides=overrides),
            options=FAST.model_copy(update={"progress_interval": 0.0, "status_min_interval": 0.0}),
        )
        for a in asks
    ]
    for pub in pubs:
        pub.started()
    threads = [threading.Thread(target=work, args=(pub, 60), kwargs={"pause": 0.03}) for pub in pubs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.3)
    for pub in pubs:
        pub.close()

    report = fake.rate_report()
    assert fake.tier_violations() == []
    assert not [c for c in fake.calls() if c.status == 429], "the budget kept every call under the tier"
    # Progress leaves 20% of each window to final messages.
    assert report["chat.update"].calls == 8
    assert 1 <= report["assistant.threads.setStatus"].calls <= 4
    assert report["chat.update"].peak_per_minute <= limits["chat.update"]


def _take_budget(team: str, seconds: float, results: Any) -> None:
    client = redis.Redis.from_url(REDIS_TEST_URL)
    budget = SlackBudget(client, team, overrides={"chat.update": (10, 60.0)})
    deadline = time.monotonic() + seconds
    taken = 0
    while time.monotonic() < deadline:
        taken += budget.try_acquire("chat.update")
        time.sleep(0.005)
    results.put(taken)


def test_budget_is_shared_by_processes(redis_client: redis.Redis) -> None:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_take_budget, args=("T0SHARED01", 2.0, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    taken = [results.get(timeout=5) for _ in procs]
    assert sum(taken) == 10, taken
    # Another team has its own budget.
    assert SlackBudget(redis_client, "T0OTHER001", overrides={"chat.update": (10, 60.0)}).try_acquire("chat.update")


def test_budget_waits_and_penalties(redis_client: redis.Redis) -> None:
    budget = SlackBudget(redis_client, "T0PENALTY1", overrides={"chat.update": (2, 1.0)})
    other = SlackBudget(redis_client, "T0PENALTY1", overrides={"chat.update": (2, 1.0)})
    assert budget.try_acquire("chat.update") and other.try_acquire("chat.update")
    assert not budget.try_acquire("chat.update")
    assert not budget.acquire("chat.update", timeout=0.2)
    started = time.monotonic()
    assert budget.acquire("chat.update", timeout=3)  # within the window's second, not the 3 s
    assert time.monotonic() - started > 0.5
    # A 429 seen by one process pauses the method for every process.
    budget.penalize("reactions.add", 1.0)
    assert not other.try_acquire("reactions.add")
    started = time.monotonic()
    assert other.acquire("reactions.add", timeout=3)
    assert time.monotonic() - started >= 0.8
    # chat.postMessage: one per second per channel, channels independent.
    assert budget.try_acquire("chat.postMessage", "C0AAAAAAA1")
    assert not budget.try_acquire("chat.postMessage", "C0AAAAAAA1")
    assert budget.try_acquire("chat.postMessage", "C0BBBBBBB1")
    # Headroom: low-priority callers stop early, leaving room for the ones that wait.
    tight = SlackBudget(redis_client, "T0HEADROOM", overrides={"chat.update": (5, 60.0)})
    assert sum(tight.try_acquire("chat.update", headroom=0.2) for _ in range(10)) == 4
    assert tight.try_acquire("chat.update") and not tight.try_acquire("chat.update")


def test_client_sleeps_through_a_429(fake: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASKBOX_SLACK_API_URL", fake.api_url)
    client = slack_client(fake.bot_token, SlackSettings().slack_api_url)
    assert client.base_url == fake.api_url
    fake.rate_limit("chat.postMessage", times=1, retry_after=1)
    started = time.monotonic()
    assert client.chat_postMessage(channel=CHANNEL, text="hi")["ok"]
    assert time.monotonic() - started >= 1.0
    assert [c.status for c in fake.calls("chat.postMessage")] == [429, 200]


# --------------------------------------------------------------------------- streaming


STREAM_OPTIONS = FAST.model_copy(update={"stream_rollover": 1.0})


def _stream_messages(fake: FakeSlack, asked: Asked) -> list[Message]:
    return [m for m in replies(fake, asked) if m.stream is not None]


def _rejoin_streams(texts: list[str], reopen: str) -> str:
    # A rollover inside a code block closes it ("\n```") and the next stream reopens it.
    # Streams are escaped like final messages: decode Slack's entities as a client shows them.
    joined = "".join(texts).replace("\n```" + reopen + "\n", "")
    return joined.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def test_streaming_rolls_over_before_expiry(redis_client: redis.Redis) -> None:
    with FakeSlack(stream_ttl=2.0) as fake:
        fake.add_user(ASKER)
        asked = ask(fake, redis_client)
        pub = publisher(fake, redis_client, asked, streaming=True, options=STREAM_OPTIONS)
        pub.started()
        pieces = [f"Paragraph {i} explains retries.\n\n" for i in range(20)]
        pieces += ["```python\n"] + [f"step_{i} = run({i})\n" for i in range(40)] + ["```\n\nDone.\n"]
        for piece in pieces:
            pub.event(TextDelta(text=piece))
            time.sleep(0.06)
        text = "".join(pieces)
        assert pub.final(answer(text))

        streams = _stream_messages(fake, asked)
        assert len(streams) >= 3, "a stream every second for ~4 s"
        assert all(m.stream == "stopped" for m in streams), [m.stream for m in streams]
        assert not [c for c in fake.calls() if c.error == "message_not_in_streaming_state"]
        starts = {c.response["ts"]: c.time for c in fake.calls("chat.startStream")}
        for stop in fake.calls("chat.stopStream"):
            assert stop.time - starts[stop.args["ts"]] < 2.0, "stopped before the fake's 2 s expiry"
        for m in streams:
            assert m.text.count("```") % 2 == 0, "each stream's code fences are balanced"
        assert _rejoin_streams([m.text for m in streams], "```python") == text
        assert_answer_message(streams[-1], asked.job.id)
        assert len(replies(fake, asked)) == len(streams), "nothing posted besides the streams"
        assert_finished(fake, asked, "answer")


def test_expired_stream_is_finalized_and_streaming_continues(fake: FakeSlack, redis_client: redis.Redis) -> None:
    asked = ask(fake, redis_client)
    pub = publisher(
        fake, redis_client, asked, streaming=True, options=STREAM_OPTIONS.model_copy(update={"stream_rollover": 60.0})
    )
    pub.started()
    first = [f"Sentence {i} before expiry." for i in range(10)]
    for s in first:
        pub.event(TextDelta(text=s + " "))
    fake.wait_until(lambda: any("Sentence 9" in m.text for m in _stream_messages(fake, asked)), timeout=5)
    [expired_ts] = fake.expire_streams()  # Slack ends the stream mid-answer
    second = [f"Sentence {i} after expiry." for i in range(10)]
    for s in second:
        pub.event(TextDelta(text=s + " "))
        time.sleep(0.02)
    text = " ".join(first + second) + " "
    assert pub.final(answer(text))

    assert [c for c in fake.calls("chat.appendStream") if c.error == "message_not_in_streaming_state"]
    expired = fake.get_message(CHANNEL, expired_ts)
    assert expired.edits >= 1, "the stuck stream was finalized with chat.update"
    streams = _stream_messages(fake, asked)
    assert len(streams) == 2 and streams[0].ts == expired_ts and streams[1].stream == "stopped"
    assert " ".join(m.text for m in streams).split() == text.split(), "every sentence exactly once, in order"
    assert_answer_message(streams[-1], asked.job.id)
    assert_finished(fake, asked, "answer")


def test_stuck_stream_at_the_end_is_finalized_with_update(fake: FakeSlack, redis_client: redis.Redis) -> None:
    asked = ask(fake, redis_client)
    pub = publisher(
        fake, redis_client, asked, streaming=True, options=STREAM_OPTIONS.model_copy(update={"stream_rollover": 60.0})
    )
    pub.started()
    pub.event(TextDelta(text="**Short** answer."))
    fake.wait_until(lambda: _stream_messages(fake, asked), timeout=5)
    fake.expire_streams()
    assert pub.final(answer("**Short** answer."))
    [stream] = _stream_messages(fake, asked)
    assert stream.text == "*Short* answer."
    assert block_types(stream) == ["section", "context", "context_actions"]
    assert_answer_message(stream, asked.job.id)


def test_streamed_draft_replaced_when_final_text_differs(fake: FakeSlack, redis_client: redis.Redis) -> None:
    asked = ask(fake, redis_client)
    pub = publisher(fake, redis_client, asked, streaming=True, options=STREAM_OPTIONS)
    pub.started()
    pub.event(TextDelta(text="A first draft that the agent later rewrote."))
    fake.wait_until(lambda: _stream_messages(fake, asked), timeout=5)
    assert pub.final(answer("The rewritten answer."))
    assert [m.text for m in replies(fake, asked)] == ["The rewritten answer."]
    assert fake.calls("chat.delete")


def test_streaming_in_a_channel_names_the_recipient(fake: FakeSlack, redis_client: redis.Redis) -> None:
    asked = ask(fake, redis_client)
    pub = publisher(fake, redis_client, asked, streaming=True, options=STREAM_OPTIONS)
    pub.started()
    pub.event(TextDelta(text="hello"))
    fake.wait_until(lambda: fake.calls("chat.startStream"), timeout=5)
    pub.final(answer("hello"))
    [start] = fake.calls("chat.startStream")
    assert start.ok and start.args["recipient_user_id"] == ASKER and start.args["recipient_team_id"] == fake.team_id


# --------------------------------------------------------------------------- long answers


@pytest.mark.parametrize("streaming", [False, True])
def test_sixty_thousand_character_answer_is_uploaded(
    fake: FakeSlack, redis_client: redis.Redis, streaming: bool
) -> None:
    text = _long_answer()
    assert len(text) > 60_000
    asked = ask(fake, redis_client)
    pub = publisher(fake, redis_client, asked, streaming=streaming, options=STREAM_OPTIONS)
    pub.started()
    for i in range(0, len(text), 2_000):
        pub.event(TextDelta(text=text[i : i + 2_000]))
        time.sleep(0.02)
    assert pub.final(answer(text))

    [upload] = [m for m in replies(fake, asked) if m.files]
    assert upload.files[0].name == ANSWER_FILENAME and upload.files[0].content == text.encode()
    if streaming:
        streams = _stream_messages(fake, asked)
        assert len(streams) >= 6 and all(len(m.text) <= 12_000 for m in streams)
        assert (
            _rejoin_streams([m.text for m in streams], "```python")
            .replace("\n```" + "```sh\n", "")
            .replace("\n```" + "```\n", "")
            == text
        )
        last = streams[-1]
    else:
        [last] = [m for m in replies(fake, asked) if not m.files]
        assert len(last.text) < 1_000, "a summary, not the answer"
        assert last.text.startswith("*Section 1*")
    assert "answer.md" in str(last.blocks)
    assert_answer_message(last, asked.job.id)
    assert_finished(fake, asked, "answer")


def test_long_answer_split_when_uploads_are_refused(fake: FakeSlack, redis_client: redis.Redis) -> None:
    text = _long_answer(size=20_000)
    fake.fail("files.getUploadURLExternal", "file_uploads_disabled")
    asked = ask(fake, redis_client)
    budget = SlackBudget(redis_client, fake.team_id, overrides={"chat.postMessage": (2, 1.0)})
    pub = publisher(fake, redis_client, asked, budget=budget)
    assert pub.final(answer(text))
    parts = replies(fake, asked)
    assert len(parts) >= len(text) // PART_LIMIT
    for part in parts:
        assert len(part.text) <= PART_LIMIT and part.text.count("```") % 2 == 0
    assert all(not m.blocks for m in parts[:-1])
    assert_answer_message(parts[-1], asked.job.id)
    sections = [s["text"]["text"] for s in parts[-1].blocks if s["type"] == "section"]
    assert all(len(t) <= 3_000 for t in sections) and _rejoin(sections) == parts[-1].text
    assert "The end." in parts[-1].text and parts[0].text.startswith("*Section 1*")
    assert fake.tier_violations() == []


def test_last_part_longer_than_a_section_spans_two_sections(fake: FakeSlack, redis_client: redis.Redis) -> None:
    text = "\n\n".join(f"Paragraph {i}: " + "retries are configured in jobs/queue.py " * 5 for i in range(17))
    assert 3_000 < len(text) <= PART_LIMIT
    asked = ask(fake, redis_client)
    assert publisher(fake, redis_client, asked).final(answer(text))
    [reply] = replies(fake, asked)
    assert block_types(reply) == ["section", "section", "context", "context_actions"]
    assert _rejoin([b["text"]["text"] for b in reply.blocks[:2]]) == reply.text == to_mrkdwn(text)


def test_medium_answer_is_split_not_uploaded(fake: FakeSlack, redis_client: redis.Redis) -> None:
    text = _long_answer(size=FILE_THRESHOLD - 1_500)
    asked = ask(fake, redis_client)
    pub = publisher(fake, redis_client, asked)
    assert pub.final(answer(text))
    parts = replies(fake, asked)
    assert 2 <= len(parts) <= 4 and not any(m.files for m in parts)
    assert not fake.calls("files.getUploadURLExternal")


# --------------------------------------------------------------------------- other outcomes


OUTCOMES = [
    Final(kind="cancelled", text="Cancelled by U0ASKER001.", repo="web", agent="cursor"),
    Final(kind="timeout", text="Timed out after 600 s. So far: Read a.py. Try a narrower question.", duration=600.0),
    Final(kind="oom", text="The agent ran out of memory (2048 MiB). Try a narrower question."),
    Final(kind="agent_error", text="The agent failed: usage limit reached <quota>"),
    Final(kind="rejected", text="I don't know the repository `nope`."),
    Final(kind="infra", text="Something went wrong on our side (docker). Reference: r1", reference="r1"),
]


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("final", OUTCOMES, ids=[f.kind for f in OUTCOMES])
def test_each_outcome_is_one_clear_message(
    fake: FakeSlack, redis_client: redis.Redis, final: Final, streaming: bool
) -> None:
    asked = ask(fake, redis_client)
    pub = publisher(fake, redis_client, asked, streaming=streaming, options=STREAM_OPTIONS)
    pub.started()
    work(pub, 2, text="partial ")
    if streaming:
        fake.wait_until(lambda: _stream_messages(fake, asked), timeout=5)
    assert pub.final(final)
    assert pub.final(final) is False
    messages = [m for m in replies(fake, asked) if m.stream is None]
    assert len(messages) == 1, [m.text for m in messages]
    [message] = messages
    assert message.text.startswith(":")  # the outcome's emoji
    assert final.text.split(" (")[0].split(" <")[0].replace("`", "") in message.text.replace("`", "")
    assert "&lt;quota&gt;" in message.text if final.kind == "agent_error" else True
    assert not actions(message), "no feedback buttons on a failure"
    assert_finished(fake, asked, final.kind)
    if streaming:
        [stream] = _stream_messages(fake, asked)
        assert stream.stream == "stopped" and "stopped before the answer was complete" in stream.text


def test_outcome_before_anything_started(fake: FakeSlack, redis_client: redis.Redis) -> None:
    asked = ask(fake, redis_client)
    pub = publisher(fake, redis_client, asked)
    assert pub.final(Final(kind="cancelled", text="Cancelled by U0ASKER001 before it started."))
    assert [m.text for m in replies(fake, asked)] == [":no_entry_sign: Cancelled by U0ASKER001 before it started."]
    assert_finished(fake, asked, "cancelled")


# --------------------------------------------------------------------------- one final


def test_two_publishers_post_one_final(fake: FakeSlack, redis_client: redis.Redis) -> None:
    asked = ask(fake, redis_client)
    pubs = [CompositePublisher(MetaPublisher(asked.job), publisher(fake, redis_client, asked)) for _ in range(2)]
    for pub in pubs:
        pub.started()
        pub.event(ToolStarted(call_id="a", tool="read", summary="Read a.py"))
    barrier = threading.Barrier(2)
    results: list[bool] = []

    def race(pub: CompositePublisher, text: str) -> None:
        barrier.wait()
        results.append(pub.final(answer(text)))

    threads = [threading.Thread(target=race, args=(p, f"answer {i}")) for i, p in enumerate(pubs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]
    [reply] = replies(fake, asked)
    assert reply.text in {"answer 0", "answer 1"}
    assert len(fake.calls("reactions.add")) == 2  # the bot's eyes, then one outcome reaction
    assert Job.fetch(asked.job.id, connection=redis_client, serializer=JSONSerializer).meta["final"]["kind"] == "answer"
    assert pubs[0].shown or pubs[1].shown


def test_a_crashed_run_stops_editing_once_another_publisher_posted(fake: FakeSlack, redis_client: redis.Redis) -> None:
    # The job raised: RQ's failure callback posts the final through a new publisher while
    # the crashed run's sender thread is still alive in the same process.
    asked = ask(fake, redis_client)
    crashed = publisher(fake, redis_client, asked, options=FAST.model_copy(update={"idle_refresh": 0.2}))
    crashed.started()
    work(crashed, 2)
    fake.wait_until(lambda: "Working" in fake.get_message(CHANNEL, asked.status_ts).text, timeout=5)
    callback = publisher(fake, redis_client, asked)
    assert callback.final(Final(kind="infra", text="The worker stopped unexpectedly. Reference: x"))
    time.sleep(1.5)
    assert fake.get_message(CHANNEL, asked.status_ts).text.startswith(":warning: Failed")
    assert crashed._thread is not None and not crashed._thread.is_alive()
    assert crashed.final(answer("late")) is False
    assert len(replies(fake, asked)) == 1


def test_publisher_for_reads_the_environment(
    fake: FakeSlack, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = ask(fake, redis_client)
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    assert slack_publisher_for(asked.question, asked.job, SlackSettings()) is None
    monkeypatch.setenv("SLACK_BOT_TOKEN", fake.bot_token)
    monkeypatch.setenv("ASKBOX_SLACK_API_URL", fake.api_url)
    monkeypatch.setenv("ASKBOX_SLACK_STREAMING", "true")
    pub = slack_publisher_for(asked.question, asked.job, SlackSettings())
    assert pub is not None and pub.streaming and pub.status_ts == asked.status_ts
    assert pub.final(Final(kind="rejected", text="No."))
    assert [m.text for m in replies(fake, asked)] == [":no_entry: No."]
    terminal = Question(origin=Origin(kind="terminal", user="me"), text="q")
    assert slack_publisher_for(terminal, asked.job, SlackSettings()) is None


def test_status_ts_found_in_redis_when_meta_was_written_later(fake: FakeSlack, redis_client: redis.Redis) -> None:
    asked = ask(fake, redis_client, status=False)
    stale = Job.fetch(asked.job.id, connection=redis_client, serializer=JSONSerializer)
    writer = Job.fetch(asked.job.id, connection=redis_client, serializer=JSONSerializer)
    writer.meta["slack_status_ts"] = "1700000000.000001"
    writer.save_meta()
    assert "slack_status_ts" not in stale.meta
    client = slack_client(fake.bot_token, fake.api_url)
    pub = SlackPublisher(client, redis_client, asked.question, stale, streaming=False, options=FAST)
    assert pub.status_ts == "1700000000.000001"


def test_a_run_answering_after_another_died_mid_stream_removes_its_streams(
    fake: FakeSlack, redis_client: redis.Redis
) -> None:
    # The first run streamed part of its answer, then its worker was SIGKILLed (nothing
    # of it finishes or cleans up); RQ's retry answers in full, streaming its own.
    asked = ask(fake, redis_client)
    dead = publisher(fake, redis_client, asked, streaming=True, options=STREAM_OPTIONS)
    dead.started()
    dead.event(TextDelta(text="The first run's half of an answer. "))
    fake.wait_until(lambda: _stream_messages(fake, asked), timeout=5)
    dead._stop.set()  # the process is gone: its sender sends nothing more
    retry = publisher(fake, redis_client, asked, streaming=True, options=STREAM_OPTIONS)
    retry.started()
    retry.event(TextDelta(text="The retried answer, whole."))
    fake.wait_until(lambda: len(_stream_messages(fake, asked)) == 2, timeout=5)
    assert retry.final(answer("The retried answer, whole."))
    [only] = [m for m in replies(fake, asked) if not m.deleted]
    assert "retried answer" in only.text and "first run" not in only.text


# --------------------------------------------------------------------------- never posted twice


def _final_parts(fake: FakeSlack, asked: Asked) -> list[str]:
    """The final's parts in the thread, by their askbox_final metadata, in order."""
    return [
        m.metadata["event_payload"]["part"]
        for m in replies(fake, asked)
        if not m.deleted and (m.metadata or {}).get("event_type") == outbox.EVENT_TYPE
    ]


def _part_of(args: dict[str, Any]) -> str | None:
    """The final's part a chat.postMessage call posts, from its metadata."""
    metadata = args.get("metadata") or {}
    metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
    return (metadata.get("event_payload") or {}).get("part")


def test_client_retries_only_what_cannot_be_done_twice(fake: FakeSlack) -> None:
    """A connection reset after Slack acted: a post is not retried (Slack posted it once;
    the caller learns its answer was lost), an edit is (doing it again changes nothing)."""
    client = slack_client(fake.bot_token, fake.api_url)
    fake.connection_reset("chat.postMessage")
    with pytest.raises(ConnectionResetError) as caught:
        client.chat_postMessage(channel=CHANNEL, text="accepted, answer lost")
    assert ambiguous(caught.value)
    assert [m.text for m in fake.channel_messages(CHANNEL)] == ["accepted, answer lost"]
    ts = fake.channel_messages(CHANNEL)[0].ts
    fake.connection_reset("chat.update")
    assert client.chat_update(channel=CHANNEL, ts=ts, text="edited")["ok"]
    assert [c.status for c in fake.calls("chat.update")] == [RESET, 200]
    assert [m.text for m in fake.channel_messages(CHANNEL)] == ["edited"]


@pytest.mark.parametrize("reset_part", ["last", "p1"])  # the only message; the middle one of three
def test_a_final_whose_post_was_reset_after_slack_accepted_it_is_in_the_thread_once(
    fake: FakeSlack, redis_client: redis.Redis, reset_part: str
) -> None:
    asked = ask(fake, redis_client)
    pub = publisher(fake, redis_client, asked, options=FAST.model_copy(update={"part_limit": 500}))
    text = "short answer" if reset_part == "last" else "\n\n".join(f"Paragraph {i}. " + "word " * 80 for i in range(3))
    # Slack posts that part, and its answer is lost on the way (a TCP reset).
    fake.connection_reset("chat.postMessage", when=lambda args: _part_of(args) == reset_part)
    assert pub.final(answer(text)) is True  # written; its delivery failed on the reset
    assert _final_parts(fake, asked)[-1] == reset_part and not outbox.delivered(redis_client, asked.job.id)
    # The sweep's attempt (a new publisher, as in another process) reads the thread
    # before it posts what is not recorded.
    publisher(fake, redis_client, asked).deliver_final(answer(text))
    parts = _final_parts(fake, asked)
    assert parts == (["last"] if reset_part == "last" else ["p0", "p1", "last"]), parts
    assert outbox.delivered(redis_client, asked.job.id)
    assert_finished(fake, asked, "answer")
    assert [c.status for c in fake.calls("chat.postMessage")].count(RESET) == 1


def test_a_final_whose_record_a_failover_lost_is_not_posted_again(fake: FakeSlack, redis_client: redis.Redis) -> None:
    """The answer was delivered, then a Sentinel failover lost the outbox record (and the
    job's end with it: replication keeps a prefix). The job ends again (RQ calls it
    abandoned: the failure callback's infra final, a first attempt): the thread already
    holds a whole final of this job, so nothing more is posted."""
    asked = ask(fake, redis_client)
    assert publisher(fake, redis_client, asked).final(answer("The answer."))
    assert _final_parts(fake, asked) == ["last"]
    redis_client.delete(keys.final_outbox(asked.job.id), keys.final_lease(asked.job.id))  # what the failover lost
    callback = publisher(fake, redis_client, asked)
    assert callback.final(Final(kind="infra", text="The worker stopped unexpectedly. Reference: x")) is True
    assert _final_parts(fake, asked) == ["last"], "a second final in the thread"
    assert outbox.delivered(redis_client, asked.job.id)
    assert fake.get_message(CHANNEL, asked.status_ts).text.startswith(":warning: Failed")  # the state: redone


def test_a_delivery_whose_lease_was_taken_over_cannot_write_the_record(redis_client: redis.Redis) -> None:
    """Fencing: a holder paused past its lease (its renewals lost) comes back after
    another process took the delivery over; its writes are refused, the newer stand."""
    final = answer("fenced")
    assert outbox.write(redis_client, "fenced-job", final)
    with outbox.delivering(redis_client, "fenced-job", final) as old:
        assert old is not None and old.token == 1
        redis_client.delete(keys.final_lease("fenced-job"))  # the lease lapsed while it was paused
        with outbox.delivering(redis_client, "fenced-job", final) as new:
            assert new is not None and new.token == 2 and new.attempt == 2
            new.record("last", "1700000000.000002")
            with pytest.raises(outbox.LeaseLost):
                old.record("last", "1700000000.000001")
            assert not old.holds() and new.holds()
            assert not old.mark("delivered")
        assert outbox.delivered(redis_client, "fenced-job")
        assert new.posted("last") == "1700000000.000002"
    # The old holder ending cleanly afterwards changes nothing either.
    assert redis_client.hget(keys.final_outbox("fenced-job"), "part:last") == b"1700000000.000002"
    assert redis_client.zscore(keys.FINAL_OUTBOX_PENDING, "fenced-job") is None


def test_the_outbox_record_and_its_pending_entry_are_one_write(redis_client: redis.Redis) -> None:
    """One script writes both (MONITOR shows one command: no crash can fall between)."""
    final = answer("atomic")
    with redis_client.monitor() as monitor:
        assert outbox.write(redis_client, "atomic-job", final)
        commands = []
        for event in monitor.listen():
            command = event["command"].split(" ")[0].upper()
            if event.get("client_type") == "lua" or command in {"HELLO", "SELECT", "CLIENT"}:
                continue  # the script's own commands; a new connection's set-up
            commands.append(command)
            if command == "INFO":
                break
    assert commands == ["EVAL", "INFO"], commands  # (INFO: are there replicas to WAIT for?)
    assert redis_client.zscore(keys.FINAL_OUTBOX_PENDING, "atomic-job") is not None
    assert outbox.write(redis_client, "atomic-job", answer("second")) is False
    assert outbox.read(redis_client, "atomic-job") == final


def test_own_status_message_reset_after_slack_posted_it_is_adopted_not_doubled(
    fake: FakeSlack, redis_client: redis.Redis
) -> None:
    asked = ask(fake, redis_client, status=False)
    fake.connection_reset("chat.postMessage")  # the worker's own status message: posted, answer lost
    pub = publisher(fake, redis_client, asked)
    pub.started()
    work(pub, 2)
    fake.wait_until(lambda: pub.status_ts is not None, timeout=5)
    [status] = [m for m in replies(fake, asked)]
    assert status.ts == pub.status_ts  # found again by its metadata
    pub.final(answer("Found it."))
    assert fake.get_message(CHANNEL, status.ts).text.startswith(":white_check_mark: Answered")
    assert [m.text for m in replies(fake, asked) if m.ts != status.ts] == ["Found it."]


def test_a_stream_append_reset_is_not_resent_and_the_final_replaces_the_streams(
    fake: FakeSlack, redis_client: redis.Redis
) -> None:
    asked = ask(fake, redis_client)
    pub = publisher(fake, redis_client, asked, streaming=True, options=STREAM_OPTIONS)
    pub.started()
    pub.event(TextDelta(text="First words. "))
    fake.wait_until(lambda: _stream_messages(fake, asked), timeout=5)
    fake.connection_reset("chat.appendStream")  # Slack appended it; the answer was lost
    pub.event(TextDelta(text="More words. "))
    fake.wait_until(lambda: any(c.status == RESET for c in fake.calls("chat.appendStream")), timeout=5)
    pub.event(TextDelta(text="The end."))
    assert pub.final(answer("First words. More words. The end."))
    shown = [m for m in replies(fake, asked) if not m.deleted]
    assert [m.text for m in shown] == ["First words. More words. The end."], [m.text for m in shown]
    assert all(c.args.get("markdown_text") != "More words. " for c in fake.calls("chat.appendStream")[1:])


# --------------------------------------------------------------------------- a job's failure


@pytest.mark.parametrize("shown", [False, True])
def test_a_job_timed_out_after_its_progress_was_shown_is_not_retried(
    fake: FakeSlack, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, shown: bool
) -> None:
    """RQ's timeout (JobTimeoutException) calls the failure callback, then retries the job
    on this very object if ``retries_left``. Nothing shown yet: silent, RQ retries. Once
    the thread showed the agent's steps: no retry, one final message saying what happened."""
    from rq.timeouts import JobTimeoutException

    from jobs import job as question_job

    monkeypatch.setenv("SLACK_BOT_TOKEN", fake.bot_token)
    monkeypatch.setenv("ASKBOX_SLACK_API_URL", fake.api_url)
    monkeypatch.setattr(question_job, "_settings", None)  # the callback loads the tree from this environment
    asked = ask(fake, redis_client)
    job = asked.job
    job.retries_left, job.timeout = 2, 1110
    run = CompositePublisher(MetaPublisher(job), publisher(fake, redis_client, asked))
    run.started()
    if shown:
        run.event(ToolStarted(call_id="a", tool="read", summary="Read a.py"))
    assert redis_client.exists(keys.progress_shown(job.id)) == shown
    question_job.on_job_failure(job, redis_client, JobTimeoutException, JobTimeoutException("timed out"), None)
    run.close()
    if not shown:
        assert job.retries_left == 2 and replies(fake, asked) == []
        return
    assert job.retries_left == 0
    [final] = replies(fake, asked)
    assert "took longer than askbox allows one question (1110 s)" in final.text and job.id in final.text
    assert_finished(fake, asked, "timeout")


def test_the_agent_session_leaves_processing_with_the_final(fake: FakeSlack, redis_client: redis.Redis) -> None:
    """Issue 19: a streamed answer's last chat.stopStream carries the session's status; an
    answer posted as messages sets it (renamed after its summary first); any other ending
    closes it."""
    from jobs.slack import agent_session

    def started(asked: Asked, streaming: bool) -> SlackPublisher:
        agent_session.start(
            asked.question, asked.job, SlackSettings(slack_bot_token=fake.bot_token, slack_api_url=fake.api_url)
        )
        pub = publisher(fake, redis_client, asked, streaming=streaming, options=STREAM_OPTIONS)
        pub.started()
        return pub

    streamed = ask(fake, redis_client, "how do retries work?")
    pub = started(streamed, streaming=True)
    pub.event(TextDelta(text="Retries back off exponentially.\n"))
    time.sleep(0.3)
    assert pub.final(answer("Retries back off exponentially.\n"))
    assert fake.session_history(CHANNEL, streamed.ts) == [
        ("processing", "how do retries work?"),
        ("active", "how do retries work?"),
    ]
    assert fake.calls("chat.stopStream")[-1].args["session_status"] == "active"
    assert not [
        c
        for c in fake.calls("agents.sessions.setStatus")
        if c.args["thread_ts"] == streamed.ts and c.args["status"] == "active"
    ]  # the stream carried it

    summed = ask(fake, redis_client, "explain the whole queue")
    assert started(summed, streaming=False).final(answer("A long answer.", summary="The queue, in short."))
    assert fake.session_history(CHANNEL, summed.ts) == [
        ("processing", "explain the whole queue"),
        ("processing", "The queue, in short."),
        ("active", "The queue, in short."),
    ]

    failed = ask(fake, redis_client, "and this?")
    assert started(failed, streaming=False).final(Final(kind="timeout", text="Timed out after 600 s."))
    assert fake.session_status(CHANNEL, failed.ts) == "closed"
