"""The Slack side of a question: live progress in its thread, then exactly one final message.

``SlackPublisher`` composes the parts, which share one ``SlackThread`` and one
``Progress`` (state.py): the status message and assistant status (progress.py), the
answer stream (streaming.py) and the final message (thread_final.py), all calling
Slack through the team's shared budget (calls.py, budget.py).

All progress runs in one background thread per question and only ever sends the newest
state when the shared budget allows: updates coalesce, never queue, and the agent's
event loop never waits for Slack. ``final()`` writes the outbox first (jobs/outbox.py):
only one final per question, delivered idempotently by whoever holds its lease. Before the final, the sender thread is stopped and joined; in
streaming mode the rest of the answer is flushed into the stream before it is stopped.
Without streaming no last progress edit is sent: the status message's final edit
supersedes it.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable

from redis import Redis
from rq.job import Job
from slack_sdk import WebClient

from jobs import keys, outbox
from jobs.final import Final
from jobs.outbox import Delivery
from jobs.question import Question
from jobs.redis_text import text
from jobs.slack import status_owner
from jobs.slack.budget import SlackBudget
from jobs.slack.calls import SlackCalls
from jobs.slack.options import SlackOptions
from jobs.slack.progress import AssistantStatus, StatusMessage, headline
from jobs.slack.settings import SlackSettings
from jobs.slack.state import Progress, SlackThread
from jobs.slack.streaming import AnswerStream
from jobs.slack.thread_final import FinalMessage
from jobs.slack.web_api import shared_client
from sandbox.agents.events import AgentEvent

log = logging.getLogger(__name__)


def slack_publisher_for(question: Question, job: Job, settings: SlackSettings) -> SlackPublisher | None:
    """The Slack publisher of a Slack question, or None (not from Slack, or no token)."""
    if question.origin.kind != "slack":
        return None
    if settings.slack_bot_token is None:
        log.warning("SLACK_BOT_TOKEN is not set: job %s reports to its RQ meta only", job.id)
        return None
    client = shared_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
    return SlackPublisher(client, job.connection, question, job, streaming=settings.slack_streaming)


class SlackPublisher:
    """Publishes one question's progress and final message to its Slack thread."""

    def __init__(
        self,
        client: WebClient,
        redis: Redis,
        question: Question,
        job: Job,
        streaming: bool,
        clock: Callable[[], float] = time.monotonic,
        *,
        options: SlackOptions | None = None,
        budget: SlackBudget | None = None,
        background: bool = True,
    ) -> None:
        self.thread = SlackThread.of(question, job, streaming)  # refuses a question not from Slack
        self.redis = redis
        self.question = question
        self.job = job
        self.clock = clock
        self.options = options = options or SlackOptions()
        self.background = background
        calls = SlackCalls(client, budget or SlackBudget(redis, question.origin.team or "-"), options, job.id)
        self.progress = Progress(clock, options.progress_lines)
        self.status_message = StatusMessage(self.thread, self.progress, calls, options, redis=redis)
        self.assistant_status = AssistantStatus(self.thread, self.progress, calls, options)
        self.stream = AnswerStream(self.thread, self.progress, calls, options, on_start=self._remember_stream)
        self.final_message = FinalMessage(self.thread, self.progress, calls, options, stream=self.stream, clock=clock)

        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None  # the sender

    @property
    def shown(self) -> bool:
        """A tool step or answer text reached the user (RQ may no longer retry silently)."""
        return self.thread.shown

    @property
    def streaming(self) -> bool:
        return self.thread.streaming

    @property
    def status_ts(self) -> str | None:
        return self.thread.status_ts

    # ------------------------------------------------------------------ Publisher protocol

    def started(self) -> None:
        self.thread.headline = headline(self.job.meta.get("pin") or {})
        self.progress.begin()
        if self.background and self._thread is None:
            # In the question's context (its trace): a new thread would start with an empty one.
            self._thread = threading.Thread(
                target=contextvars.copy_context().run, args=(self._run,), name=f"slack-{self.job.id}", daemon=True
            )
            self._thread.start()
        self._poke()

    def event(self, event: AgentEvent) -> None:
        if self.progress.record(event):
            self._poke()

    def final(self, final: Final) -> bool:
        """Write the question's one final message, then deliver it; False if already written."""
        return outbox.publish(self.redis, self.job.id, final, self.write_final, self.deliver_final)

    def write_final(self, final: Final) -> bool:
        if outbox.write(self.redis, self.job.id, final):
            return True
        self.close()
        return False

    def deliver_final(self, final: Final) -> None:
        outbox.deliver(self.redis, self.job.id, final, [self])

    def post_final(self, final: Final, delivery: Delivery | None = None) -> None:
        """Post the final message (the caller wrote it and holds the delivery lease)."""
        self.close()
        if self.thread.status_ts is None:
            # The bot posts the status message after its ack: settle it before the final,
            # so it is finished, or never posted under the answer (jobs/slack/status_owner.py).
            self.thread.status_ts = status_owner.settle_for_final(self.redis, self.job.id)
        # Streams of an earlier run (killed mid-answer, retried by this one) would read
        # as a second, unfinished answer: they go before the final is posted.
        # Not once the answer is in the thread: a finished stream may be its "last" part.
        finished = delivery is not None and delivery.posted("last") is not None
        recorded = [text(ts) for ts in self.redis.lrange(keys.answer_streams(self.job.id), 0, -1)]
        if recorded and not finished:
            self.stream.remove_foreign(recorded)
        self.final_message.post(final, delivery)

    def _remember_stream(self, ts: str) -> None:
        with self.redis.pipeline() as pipe:
            pipe.rpush(keys.answer_streams(self.job.id), ts)
            pipe.expire(keys.answer_streams(self.job.id), keys.DAY)
            pipe.execute()

    def close(self) -> None:
        """Stop sending progress (the final message, if any, is the caller's)."""
        self.progress.close()
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.options.final_wait + 35)

    # ------------------------------------------------------------------ the sender

    def _poke(self) -> None:
        if self.background:
            self._wake.set()
        else:
            self._tick()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:
                log.exception("job %s: Slack progress update failed", self.job.id)
            self._wake.wait(self.options.tick)
            self._wake.clear()

    def _tick(self) -> None:
        if self.progress.closed or self.progress.begun is None:
            return
        if outbox.written(self.redis, self.job.id):
            # Someone else posts the final (the failure callback after a crash, another
            # worker): a progress edit now could land on top of the final state.
            self.progress.close()
            self._stop.set()
            return
        now = self.clock()
        if self.thread.streaming:
            self.stream.update(now)
        self.assistant_status.update(now)
        self.status_message.update(now)
