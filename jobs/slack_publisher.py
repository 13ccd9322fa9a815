"""The Slack side of a question: live progress in its thread, then exactly one final message.

While the agent works:

- the bot's status message (``job.meta["slack_status_ts"]``, or ``origin.status_ts``;
  posted by us if neither exists) is edited with the elapsed time, the agent's last tool
  steps in plain words and, without streaming, a preview of the answer; its Cancel
  button stays until the end;
- with streaming (``ASKBOX_SLACK_STREAMING=true``) the answer text is streamed into
  the thread (chat.startStream / appendStream / stopStream); a stream is stopped and a
  new one started before Slack's ~5 minute expiry, or when it holds ``stream_max_chars``;
  a stream Slack already ended (``message_not_in_streaming_state``) is finalized with
  chat.update and the text continues in a new one;
- ``assistant.threads.setStatus`` shows what the agent does, re-set before its 2 minute
  expiry (switched off at the first refusal: it only works in assistant threads).

All of that runs in one background thread per question and only ever sends the newest
state when the shared budget (jobs/slack_budget.py) allows: updates coalesce, never
queue, and the agent's event loop never waits for Slack.

The final message: the answer as mrkdwn split at Slack's limits (or, above 12,000
characters, ``answer.md`` uploaded with a summary), footer and feedback buttons on the
last part; any other outcome is one message with its reason. Then the status message
turns into a one-line final state (Cancel removed), ``eyes`` is replaced by an outcome
reaction. ``final()`` claims first (``claim_final``): only one process ever posts.
Before the final, the sender thread is stopped and joined; in streaming mode the rest
of the answer is flushed into the stream before it is stopped. Without streaming no
last progress edit is sent: the status message's final edit supersedes it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis import Redis
from rq.job import Job
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler
from slack_sdk.web.slack_response import SlackResponse

from jobs.final import Final, FinalKind, claim_final
from jobs.question import Question
from jobs.slack_budget import (
    SharedRateLimitHandler,
    SlackBudget,
    rate_limit_scope,
    retry_after_seconds,
)
from jobs.slack_format import (
    FILE_THRESHOLD,
    PART_LIMIT,
    SECTION_LIMIT,
    escape,
    fence_closer,
    open_fence,
    split_message,
    summarize_for_file,
    to_mrkdwn,
)
from sandbox.events import AgentEvent, Started, TextDelta, ToolFinished, ToolStarted

log = logging.getLogger(__name__)

# The bot's Cancel button (bot/ingress.py); jobs/ must not import bot/, so it is repeated.
CANCEL_ACTION = "askbox_cancel"
FEEDBACK_UP = "askbox_feedback_up"
FEEDBACK_DOWN = "askbox_feedback_down"
ANSWER_FILENAME = "answer.md"

REACTIONS: dict[FinalKind, str] = {
    "answer": "white_check_mark",
    "cancelled": "no_entry_sign",
    "timeout": "hourglass",
    "oom": "x",
    "agent_error": "x",
    "rejected": "no_entry",
    "infra": "warning",
}
STATUS_LINES: dict[FinalKind, str] = {
    "answer": ":white_check_mark: Answered",
    "cancelled": ":no_entry_sign: Cancelled",
    "timeout": ":hourglass: Timed out",
    "oom": ":x: Out of memory",
    "agent_error": ":x: The agent failed",
    "rejected": ":no_entry: Not answered",
    "infra": ":warning: Failed",
}
WORKING_REACTION = "eyes"  # what the bot adds when it accepts a question
STREAM_GONE = {"message_not_in_streaming_state", "message_not_found"}


class SlackOptions(BaseModel):
    """Timings and sizes; the defaults suit Slack, tests shrink the times."""

    progress_interval: float = 2.0  # min seconds between two edits of the status message
    idle_refresh: float = 15.0  # edit anyway after this long, so the elapsed time moves
    append_interval: float = 1.0  # min seconds between two appendStream calls
    stream_rollover: float = 270.0  # Slack expires a stream after ~5 minutes
    stream_max_chars: int = 11_000  # per stream message (appendStream takes 12,000 per call)
    status_refresh: float = 100.0  # setStatus lapses after 2 minutes without a reply
    status_min_interval: float = 5.0  # min seconds between setStatus calls for a new step
    tick: float = 0.25  # the sender's idle wake-up
    progress_headroom: float = 0.2  # share of each rate window progress leaves to finals
    final_wait: float = 60.0  # a final call waits this long for the budget, then goes anyway
    part_limit: int = PART_LIMIT
    section_limit: int = SECTION_LIMIT
    file_threshold: int = FILE_THRESHOLD
    progress_lines: int = 6
    preview_chars: int = 1200


class SlackSettings(BaseSettings):
    """The worker's Slack settings: the bot's token and ``ASKBOX_SLACK_*``."""

    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    slack_bot_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("SLACK_BOT_TOKEN"))
    slack_api_url: str | None = None  # e.g. a proxy or a fake; must end with /api/
    slack_streaming: bool = False  # stream answers with chat.startStream (needs the app's streaming feature)


# --------------------------------------------------------------------------- client


def slack_client(token: str, base_url: str | None = None) -> WebClient:
    """A WebClient that sleeps through 429s (``Retry-After``; and reports them to the
    shared budget, see ``rate_limit_scope``) and retries dropped connections."""
    url = base_url or os.environ.get("ASKBOX_SLACK_API_URL") or WebClient.BASE_URL
    client = WebClient(token=token, base_url=url if url.endswith("/") else url + "/", timeout=30)
    client.retry_handlers = [ConnectionErrorRetryHandler(max_retry_count=2), SharedRateLimitHandler(max_retry_count=3)]
    return client


_clients: dict[tuple[str, str | None], WebClient] = {}
_clients_lock = threading.Lock()


def slack_publisher_for(question: Question, job: Job, settings: SlackSettings | None = None) -> SlackPublisher | None:
    """The Slack publisher of a Slack question, or None (not from Slack, or no token)."""
    if question.origin.kind != "slack":
        return None
    settings = settings or SlackSettings()
    if settings.slack_bot_token is None:
        log.warning("SLACK_BOT_TOKEN is not set: job %s reports to its RQ meta only", job.id)
        return None
    key = (settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
    with _clients_lock:  # one client (one connection pool) per token per process
        client = _clients.get(key) or _clients.setdefault(key, slack_client(*key))
    return SlackPublisher(client, job.connection, question, job, streaming=settings.slack_streaming)


# --------------------------------------------------------------------------- composite


class _PostsFinal(Protocol):
    def started(self) -> None: ...
    def event(self, event: AgentEvent) -> None: ...
    def post_final(self, final: Final) -> None: ...


class CompositePublisher:
    """Fans a question's progress out to several publishers and claims its final once.

    The first publisher's ``final()`` takes the claim (``claim_final``); only when it
    won do the others post through ``post_final()``, which does not claim again (the
    claim is one key per job: a second claim would always lose)."""

    def __init__(self, first: Any, *others: _PostsFinal) -> None:
        self.publishers: tuple[Any, ...] = (first, *others)

    @property
    def shown(self) -> bool:
        return any(getattr(p, "shown", False) for p in self.publishers)

    def started(self) -> None:
        for publisher in self.publishers:
            _quietly(publisher.started)

    def event(self, event: AgentEvent) -> None:
        for publisher in self.publishers:
            _quietly(publisher.event, event)

    def final(self, final: Final) -> bool:
        first, *others = self.publishers
        if not first.final(final):
            for publisher in others:
                _quietly(getattr(publisher, "close", lambda: None))
            return False
        for publisher in others:
            _quietly(publisher.post_final, final)
        return True


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    # One destination failing must not take the others, or the job, down with it.
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        log.exception("publisher %s failed", getattr(fn, "__qualname__", fn))


# --------------------------------------------------------------------------- the publisher


@dataclass
class _Step:
    summary: str
    ok: bool | None = None  # None while running
    detail: str = ""


@dataclass
class _Stream:
    ts: str
    started: float
    text: str = ""  # the Markdown this message holds
    last_append: float = 0.0


def format_elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _button(text: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action_id, "value": value,
                              "text": {"type": "plain_text", "text": text, "emoji": True}}
    if style:
        button["style"] = style
    return button


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
        origin = question.origin
        if origin.kind != "slack" or not origin.channel:
            raise ValueError("SlackPublisher needs a question from Slack")
        self.client = client
        self.redis = redis
        self.question = question
        self.job = job
        self.streaming = streaming
        self.clock = clock
        self.options = options or SlackOptions()
        self.budget = budget or SlackBudget(redis, origin.team or "-")
        self.background = background
        self.channel: str = origin.channel
        self.thread_ts: str | None = origin.thread_ts or origin.message_ts
        self.message_ts = origin.message_ts
        self.status_ts = _status_ts(question, job)
        self.shown = False  # a tool step or answer text reached the user

        self._lock = threading.Lock()  # guards the progress state below (events vs. sender)
        self._begun: float | None = None
        self._steps: list[_Step] = []
        self._running: dict[str, _Step] = {}
        self._step_count = 0
        self._text = ""  # the answer so far
        self._version = 0  # bumped by every visible change
        self._closed = False

        # Owned by the sender thread until it is joined, then by final().
        self._shown_version = -1
        self._last_edit = float("-inf")
        self._posted_own_status = False
        self._status_on = True
        self._status_text: str | None = None
        self._status_at = float("-inf")
        self._streamed = 0  # characters of _text sent into streams
        self._stream: _Stream | None = None  # the stream still open
        self._streams: list[_Stream] = []  # every stream message, in order
        self._reopen = ""  # a code fence to reopen at the start of the next stream

        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ Publisher protocol

    def started(self) -> None:
        with self._lock:
            self._begun = self.clock()
            self._version += 1
        if self.background and self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"slack-{self.job.id}", daemon=True)
            self._thread.start()
        self._poke()

    def event(self, event: AgentEvent) -> None:
        with self._lock:
            if self._closed:
                return
            if self._begun is None:
                self._begun = self.clock()
            if isinstance(event, ToolStarted):
                step = _Step(event.summary)
                self._steps = (self._steps + [step])[-self.options.progress_lines :]
                self._running[event.call_id] = step
                self._step_count += 1
            elif isinstance(event, ToolFinished):
                step = self._running.pop(event.call_id, None)
                if step is not None:
                    step.ok, step.detail = event.ok, event.detail
            elif isinstance(event, TextDelta):
                self._text += event.text
            elif not isinstance(event, Started):
                return  # diagnostics change nothing the user sees
            self._version += 1
        self._poke()

    def final(self, final: Final) -> bool:
        """Claim the question's one final message, then post it; False if already claimed."""
        if not claim_final(self.redis, self.job.id):
            self.close()
            return False
        self.post_final(final)
        return True

    def post_final(self, final: Final) -> None:
        """Post the final message without claiming (the caller holds the claim)."""
        self.close()
        try:
            if final.kind == "answer":
                self._post_answer(final)
            else:
                self._post_outcome(final)
        except Exception:  # noqa: BLE001 - the claim is taken: log, never retry into a second answer
            log.exception("job %s: posting the final %s to Slack failed", self.job.id, final.kind)
        for step in (self._finish_status_message, self._react):
            try:
                step(final)
            except Exception:  # noqa: BLE001
                log.exception("job %s: finishing the Slack thread failed", self.job.id)

    def close(self) -> None:
        """Stop sending progress (the final message, if any, is the caller's)."""
        with self._lock:
            self._closed = True
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
            except Exception:  # noqa: BLE001 - progress is best effort; the final is not here
                log.exception("job %s: Slack progress update failed", self.job.id)
            self._wake.wait(self.options.tick)
            self._wake.clear()

    def _tick(self) -> None:
        if self._closed or self._begun is None:
            return
        if self._final_taken():
            # Someone else posts the final (the failure callback after a crash, another
            # worker): a progress edit now could land on top of the final state.
            with self._lock:
                self._closed = True
            self._stop.set()
            return
        now = self.clock()
        if self.streaming:
            self._stream_progress(now)
        self._set_status(now)
        self._edit_status_message(now)

    def _final_taken(self) -> bool:
        # The key claim_final sets (jobs/final.py).
        return bool(self.redis.exists(f"askbox:final:{self.job.id}"))

    # ------------------------------------------------------------------ progress message

    def _edit_status_message(self, now: float) -> None:
        with self._lock:
            version = self._version
        changed = version != self._shown_version and now - self._last_edit >= self.options.progress_interval
        if not (changed or now - self._last_edit >= self.options.idle_refresh):
            return
        text, blocks = self._progress_message(now)
        try:
            if self.status_ts is None:
                if self._posted_own_status:
                    return  # ours was deleted too: progress stays in the stream and the meta
                response = self._try("chat.postMessage", channel=self.channel, thread_ts=self.thread_ts,
                                     text=text, blocks=blocks)
                if response is not None:
                    self._posted_own_status = True
                    self.status_ts = response["ts"]
            else:
                response = self._try("chat.update", channel=self.channel, ts=self.status_ts, text=text, blocks=blocks)
        except SlackApiError as exc:
            self._last_edit = now  # back off until the next interval
            if _error(exc) in {"message_not_found", "cant_update_message"}:
                self.status_ts = None  # deleted: post one of our own next time
            elif _status(exc) != 429:
                log.warning("job %s: status message edit failed: %s", self.job.id, _error(exc))
            return
        if response is None:
            return  # no budget now: the next tick sends the newest state instead
        self._last_edit, self._shown_version = now, version
        with self._lock:
            if self._step_count or (self._text and not self.streaming):
                self.shown = True

    def _progress_message(self, now: float) -> tuple[str, list[dict[str, Any]]]:
        with self._lock:
            steps = [(s.summary, s.ok, s.detail) for s in self._steps]
            count, text, begun = self._step_count, self._text, self._begun or now
        head = f":hourglass_flowing_sand: Working… {format_elapsed(now - begun)}"
        if count:
            head += f" · {count} step{'s' if count != 1 else ''}"
        lines = [head]
        for summary, ok, detail in steps:
            mark = "…" if ok is None else "✓" if ok else "✗"
            line = f"{mark} {escape(summary[:150])}"
            if ok is False and detail:
                line += f" — _{escape(detail[:100])}_"
            lines.append(line)
        blocks = [section("\n".join(lines))]
        if text.strip() and not self.streaming:
            preview = to_mrkdwn(_tail(text, self.options.preview_chars))
            blocks.append(section(split_message(preview, self.options.section_limit - 100)[-1]))
        blocks.append({"type": "actions", "elements": [
            _button("Cancel", CANCEL_ACTION, self.job.id, style="danger")]})
        return head, blocks

    def _set_status(self, now: float) -> None:
        if not self._status_on or not self.thread_ts:
            return
        with self._lock:
            running = [s.summary for s in self._steps if s.ok is None]
        status = f"is working: {running[-1]}" if running else "is working…"
        status = status if len(status) <= 100 else status[:99] + "…"
        since = now - self._status_at
        due = since >= self.options.status_refresh or (
            status != self._status_text and since >= self.options.status_min_interval)
        if not due:
            return
        try:
            response = self._try("assistant.threads.setStatus", channel_id=self.channel, thread_ts=self.thread_ts,
                                 status=status)
        except SlackApiError as exc:
            if _status(exc) != 429:
                # Not an assistant thread, or no scope for it: it will not work later either.
                log.info("job %s: assistant status unavailable (%s)", self.job.id, _error(exc))
                self._status_on = False
            return
        if response is not None:
            self._status_at, self._status_text = now, status

    # ------------------------------------------------------------------ streaming

    def _stream_progress(self, now: float) -> None:
        stream = self._stream
        if stream is not None and now - stream.started >= self.options.stream_rollover:
            self._close_stream(stream, wait=False)  # before Slack expires it; text resumes in a new one
        with self._lock:
            pending = self._text[self._streamed :]
        if not pending or not self.streaming:
            return
        if self._stream is not None and now - self._stream.last_append < self.options.append_interval:
            return
        self._push(pending, now, wait=False)

    def _push(self, pending: str, now: float, *, wait: bool) -> bool:
        """Send the start of ``pending`` into the open stream (starting or rolling over to
        a new one as needed). False when nothing was sent (no budget, or streaming broke)."""
        stream = self._stream
        if stream is not None and (now - stream.started >= self.options.stream_rollover
                                   or len(stream.text) >= self.options.stream_max_chars):
            if not self._close_stream(stream, wait=wait):
                return False
            stream = None
        used = len(stream.text) if stream is not None else len(self._reopen)
        chunk = _chunk(pending, max(1, self.options.stream_max_chars - used))
        try:
            if stream is None:
                markdown = self._reopen + chunk
                args: dict[str, Any] = {"channel": self.channel, "thread_ts": self.thread_ts, "markdown_text": markdown}
                if not self.channel.startswith("D"):  # Slack needs the reader outside DMs
                    args.update(recipient_user_id=self.question.origin.user,
                                recipient_team_id=self.question.origin.team)
                response = self._call("chat.startStream", wait=wait, **args)
                if response is None:
                    return False
                stream = _Stream(ts=response["ts"], started=now, text=markdown, last_append=now)
                self._stream, self._reopen = stream, ""
                self._streams.append(stream)
            else:
                response = self._call("chat.appendStream", wait=wait, channel=self.channel, ts=stream.ts,
                                      markdown_text=chunk)
                if response is None:
                    return False
                stream.text += chunk
                stream.last_append = now
        except SlackApiError as exc:
            if stream is not None and _error(exc) in STREAM_GONE:
                self._recover(stream, chunk)
                return True
            if _status(exc) != 429:
                log.warning("job %s: streaming failed (%s); falling back to status edits", self.job.id, _error(exc))
                self.streaming = False
            return False
        self._streamed += len(chunk)
        self.shown = True
        return True

    def _recover(self, stream: _Stream, chunk: str) -> None:
        """Slack ended the stream (expired, or stopped elsewhere): make its message final
        with chat.update, including the text that did not get in, and go on in a new one."""
        self._stream = None
        full = stream.text + chunk
        fence = open_fence(full)
        closing = "\n" + fence_closer(fence) if fence else ""
        try:
            response = self._call("chat.update", wait=True, channel=self.channel, ts=stream.ts,
                                  text=to_mrkdwn(full + closing))
        except SlackApiError as exc:
            log.warning("job %s: could not finalize an expired stream: %s", self.job.id, _error(exc))
            response = None
        if response is not None:
            stream.text = full + closing
            self._streamed += len(chunk)
        else:
            fence = open_fence(stream.text)  # the chunk goes into the next stream instead
        self._reopen = fence + "\n" if fence else ""
        log.info("job %s: stream %s had expired; continuing in a new one", self.job.id, stream.ts)

    def _close_stream(self, stream: _Stream, *, wait: bool, extra: str = "",
                      blocks: list[dict[str, Any]] | None = None) -> bool:
        """Stop ``stream`` (closing an open code fence, which the next stream reopens)."""
        fence = open_fence(stream.text)
        closing = "\n" + fence_closer(fence) if fence else ""
        markdown = closing + extra
        try:
            response = self._call("chat.stopStream", wait=wait, channel=self.channel, ts=stream.ts,
                                  markdown_text=markdown or None, blocks=blocks)
            if response is None:
                return False
        except SlackApiError as exc:
            if _status(exc) == 429:
                return False
            if _error(exc) in STREAM_GONE:
                self._finalize_with_update(stream, markdown, blocks)
            else:
                log.warning("job %s: stopping stream %s failed: %s", self.job.id, stream.ts, _error(exc))
        stream.text += markdown
        if self._stream is stream:
            self._stream = None
        self._reopen = fence + "\n" if fence else ""
        return True

    def _finalize_with_update(self, stream: _Stream, extra: str, blocks: list[dict[str, Any]] | None) -> None:
        """A stream message that can no longer be stopped becomes a plain message."""
        mrkdwn = to_mrkdwn(stream.text + extra)
        args: dict[str, Any] = {"channel": self.channel, "ts": stream.ts, "text": mrkdwn[:39_000]}
        if blocks is not None:
            args["blocks"] = [section(p) for p in split_message(mrkdwn, self.options.section_limit) if p.strip()][:45]
            args["blocks"] += blocks
        try:
            self._call("chat.update", wait=True, **args)
        except SlackApiError as exc:
            log.warning("job %s: finalizing stream %s failed: %s", self.job.id, stream.ts, _error(exc))

    # ------------------------------------------------------------------ the final message

    def _post_answer(self, final: Final) -> None:
        streamed = self._text[: self._streamed]
        if self._streams and final.text.startswith(streamed):
            self._finish_streamed_answer(final, final.text[len(streamed) :])
            return
        if self._streams:
            # The final text is not what was streamed (an agent may rewrite it): the
            # streams were drafts. Remove them, so the answer is in the thread once.
            self._discard_streams()
        self._post_answer_messages(final)

    def _finish_streamed_answer(self, final: Final, remainder: str) -> None:
        note = self._attach_if_long(final)
        tail = self._answer_tail(final, note)
        while remainder and self.streaming:
            before = self._streamed
            if not self._push(remainder, self.clock(), wait=True):
                break
            remainder = remainder[self._streamed - before :]
        if remainder:
            # Streaming broke on the way: the rest goes out as ordinary messages.
            if self._stream is not None:
                self._close_stream(self._stream, wait=True)
            self._post_parts(to_mrkdwn(self._reopen + remainder), tail)
            return
        if self._stream is not None:
            self._close_stream(self._stream, wait=True, blocks=tail)
        else:  # the last stream was already stopped (rolled over while tools ran)
            self._finalize_with_update(self._streams[-1], "", tail)

    def _discard_streams(self) -> None:
        if self._stream is not None:
            self._close_stream(self._stream, wait=True)
        for stream in self._streams:
            try:
                self._call("chat.delete", wait=True, channel=self.channel, ts=stream.ts)
            except SlackApiError as exc:
                log.warning("job %s: could not remove draft stream %s: %s", self.job.id, stream.ts, _error(exc))
        self._streams.clear()

    def _post_answer_messages(self, final: Final) -> None:
        note = self._attach_if_long(final)
        if note:
            mrkdwn = to_mrkdwn(summarize_for_file(final.text))
        else:
            mrkdwn = to_mrkdwn(final.text)
        self._post_parts(mrkdwn, self._answer_tail(final, note))

    def _attach_if_long(self, final: Final) -> str:
        """Upload a very long answer as answer.md; the note to show, or "" if not uploaded."""
        if len(final.text) <= self.options.file_threshold:
            return ""
        for method in ("files.getUploadURLExternal", "files.completeUploadExternal"):
            self.budget.acquire(method, timeout=self.options.final_wait)
        try:
            with rate_limit_scope(self.budget, retry=True):
                self.client.files_upload_v2(channel=self.channel, thread_ts=self.thread_ts, content=final.text,
                                            filename=ANSWER_FILENAME, title="The full answer")
        except Exception as exc:  # noqa: BLE001 - uploads off, or storage full: post it as text
            log.warning("job %s: uploading %s failed (%s); posting the answer as text", self.job.id,
                        ANSWER_FILENAME, exc)
            return ""
        return f"_The full answer ({len(final.text):,} characters) is attached as `{ANSWER_FILENAME}`._"

    def _answer_tail(self, final: Final, note: str) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if note:
            blocks.append(section(note))
        footer = final.footer()
        if footer:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(footer)}]})
        blocks.append({"type": "actions", "elements": [
            _button(":thumbsup: Helpful", FEEDBACK_UP, self.job.id),
            _button(":thumbsdown: Not helpful", FEEDBACK_DOWN, self.job.id),
        ]})
        return blocks

    def _post_parts(self, mrkdwn: str, tail: list[dict[str, Any]]) -> None:
        """``mrkdwn`` as one or more thread replies; ``tail`` blocks under the last one."""
        parts = split_message(mrkdwn, self.options.part_limit) if mrkdwn.strip() else [""]
        for part in parts[:-1]:
            self._post(text=part)
        last = parts[-1]
        blocks = [section(p) for p in split_message(last, self.options.section_limit) if p.strip()] + tail
        fallback = last if last.strip() else _plain(tail) or "Done."
        try:
            self._post(text=fallback, blocks=blocks)
        except SlackApiError as exc:
            if _status(exc) == 429:
                raise
            # Blocks refused (a limit we misjudged): the text must still arrive.
            log.warning("job %s: final blocks refused (%s); posting text only", self.job.id, _error(exc))
            self._post(text=(last + "\n\n" + _plain(tail)).strip()[: self.options.part_limit])

    def _post_outcome(self, final: Final) -> None:
        if self._stream is not None:
            self._close_stream(self._stream, wait=True, extra="\n\n_(stopped before the answer was complete)_")
        text = f"{STATUS_LINES[final.kind].split(' ', 1)[0]} {to_mrkdwn(final.text)}"
        text = split_message(text, self.options.section_limit)[0]
        blocks = [section(text)]
        footer = final.footer()
        if footer:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(footer)}]})
        try:
            self._post(text=text, blocks=blocks)
        except SlackApiError as exc:
            if _status(exc) == 429:
                raise
            self._post(text=text)

    def _post(self, **args: Any) -> SlackResponse | None:
        return self._call("chat.postMessage", wait=True, channel=self.channel, thread_ts=self.thread_ts,
                          unfurl_links=False, unfurl_media=False, **args)

    def _finish_status_message(self, final: Final) -> None:
        """The status message becomes one line of final state; its Cancel button goes."""
        if self.status_ts is None:
            return
        with self._lock:
            steps, begun = self._step_count, self._begun
        took = final.duration if final.duration is not None else (self.clock() - begun if begun else None)
        line = STATUS_LINES[final.kind]
        if took is not None:
            line += f" · {format_elapsed(took)}"
        if steps:
            line += f" · {steps} step{'s' if steps != 1 else ''}"
        try:
            self._call("chat.update", wait=True, channel=self.channel, ts=self.status_ts, text=line,
                       blocks=[section(line)])
        except SlackApiError as exc:
            log.warning("job %s: final status edit failed: %s", self.job.id, _error(exc))

    def _react(self, final: Final) -> None:
        if not self.message_ts:
            return
        calls = (("reactions.remove", WORKING_REACTION, {"no_reaction"}),
                 ("reactions.add", REACTIONS[final.kind], {"already_reacted"}))
        for method, name, fine in calls:
            try:
                self._call(method, wait=True, channel=self.channel, timestamp=self.message_ts, name=name)
            except SlackApiError as exc:
                if _error(exc) not in fine:
                    log.warning("job %s: %s %s failed: %s", self.job.id, method, name, _error(exc))

    # ------------------------------------------------------------------ calls

    def _try(self, method: str, **args: Any) -> SlackResponse | None:
        return self._call(method, wait=False, **args)

    def _call(self, method: str, *, wait: bool, **args: Any) -> SlackResponse | None:
        """Call ``method`` within the team's budget.

        ``wait=False`` (progress): None at once when the budget says no, and a 429 is
        raised, not retried (the next tick sends a newer state anyway). ``wait=True``
        (final messages): waits for the budget up to ``final_wait`` and then goes anyway,
        with the client sleeping through 429s as Slack asks."""
        channel = args.get("channel") if method == "chat.postMessage" else None
        if wait:
            if not self.budget.acquire(method, channel, timeout=self.options.final_wait):
                log.warning("job %s: %s waited %.0f s for the rate budget; sending anyway",
                            self.job.id, method, self.options.final_wait)
        elif not self.budget.try_acquire(method, channel, headroom=self.options.progress_headroom):
            return None
        args = {k: v for k, v in args.items() if v is not None}
        with rate_limit_scope(self.budget, retry=wait):
            try:
                return getattr(self.client, method.replace(".", "_"))(**args)
            except SlackApiError as exc:
                if _status(exc) == 429:
                    self.budget.penalize(method, retry_after_seconds(dict(exc.response.headers or {})), channel)
                raise


# --------------------------------------------------------------------------- helpers


def _status_ts(question: Question, job: Job) -> str | None:
    """The bot's status message: in the job's meta (written after enqueueing, so maybe
    only in Redis yet) or in the question's origin."""
    ts = job.meta.get("slack_status_ts") or getattr(question.origin, "status_ts", None)
    if ts:
        return str(ts)
    try:
        raw = job.connection.hget(job.key, "meta")
        meta = job.serializer.loads(raw) if raw else {}
    except Exception:  # noqa: BLE001 - no meta is the same as no status message
        return None
    return str(meta["slack_status_ts"]) if meta.get("slack_status_ts") else None


def _chunk(pending: str, room: int) -> str:
    """At most ``room`` characters of ``pending``, cut after a newline when one is near."""
    if len(pending) <= room:
        return pending
    newline = pending.rfind("\n", room // 2, room)
    return pending[: newline + 1] if newline >= 0 else pending[:room]


def _tail(markdown: str, chars: int) -> str:
    """The end of a partial answer, from a line start, with its code fence reopened."""
    if len(markdown) <= chars:
        return markdown
    cut = len(markdown) - chars
    newline = markdown.find("\n", cut, cut + 200)
    cut = newline + 1 if newline >= 0 else cut
    fence = open_fence(markdown[:cut])
    return "…\n" + (fence + "\n" if fence else "") + markdown[cut:]


def _plain(blocks: list[dict[str, Any]]) -> str:
    texts = [b["text"]["text"] for b in blocks if b.get("type") == "section"]
    texts += [e["text"] for b in blocks if b.get("type") == "context" for e in b["elements"]]
    return "\n".join(texts)


def _error(exc: SlackApiError) -> str:
    return str(exc.response.get("error") or "")


def _status(exc: SlackApiError) -> int:
    return int(getattr(exc.response, "status_code", 0) or 0)
