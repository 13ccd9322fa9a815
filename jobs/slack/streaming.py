"""Streaming the answer into the thread as the agent writes it (``ASKBOX_SLACK_STREAMING``).

chat.startStream / appendStream / stopStream. A stream is stopped and a new one started
before Slack's ~5 minute expiry, or when it holds ``stream_max_chars``; a code block
open at the cut is closed and reopened in the next stream. A stream Slack already ended
(``message_not_in_streaming_state``) is finalized with chat.update and the text
continues in a new one. When Slack refuses streaming altogether, the question falls
back to status-message previews (``SlackThread.streaming`` goes off).

What is sent is ``safe_markdown`` of the agent's text (the final message's escaping and
deceptive-link rule, jobs/slack/mrkdwn.py); while the agent writes, a link still being
written is held back until it is whole. ``StreamMessage.text`` keeps the agent's own
Markdown, which ``to_mrkdwn`` renders when a stream is finalized with chat.update.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError

from jobs.slack.blocks import Block, sections
from jobs.slack.mrkdwn import fence_closer, open_fence, safe_markdown, settled, to_mrkdwn
from jobs.slack.state import ThreadPart
from jobs.slack.web_api import ambiguous, error_code, http_status

log = logging.getLogger(__name__)

STREAM_GONE = {"message_not_in_streaming_state", "message_not_found"}


@dataclass
class StreamMessage:
    ts: str
    started: float
    text: str = ""  # the Markdown this message holds
    last_append: float = 0.0
    sent: int = 0  # characters sent into it, as sent (safe_markdown: escaped), for Slack's limit


@dataclass(eq=False)
class AnswerStream(ThreadPart):
    """The answer's stream messages in the thread: the one still open and all before it."""

    streamed: int = field(default=0, init=False)  # characters of the answer text sent into streams
    open: StreamMessage | None = field(default=None, init=False)  # the stream still open
    messages: list[StreamMessage] = field(default_factory=list, init=False)  # every stream message, in order
    reopen: str = field(default="", init=False)  # a code fence to reopen at the start of the next stream
    # A start or append got no answer (a reset, a 5xx): Slack may or may not hold it, so
    # it is never sent again; streaming stops and the final replaces the streams.
    doubtful: bool = field(default=False, init=False)
    # Told each new stream's ts (kept in Redis by the publisher): a run that takes over
    # after this process died removes the streams it cannot finish (``remove_foreign``).
    on_start: Callable[[str], None] | None = None

    # ------------------------------------------------------------------ while the agent works

    def update(self, now: float) -> None:
        """Send what the agent wrote since the last call, within the append interval."""
        stream = self.open
        if stream is not None and now - stream.started >= self.options.stream_rollover:
            self.close(stream, wait=False)  # before Slack expires it; text resumes in a new one
        with self.progress.lock:
            pending = settled(self.progress.text[self.streamed :])  # the end may be half a link
        if not pending or not self.thread.streaming:
            return
        if self.open is not None and now - self.open.last_append < self.options.append_interval:
            return
        self.push(pending, now, wait=False)

    def push(self, pending: str, now: float, *, wait: bool) -> bool:
        """Send the start of ``pending`` into the open stream (starting or rolling over to
        a new one as needed). False when nothing was sent (no budget, or streaming broke)."""
        thread = self.thread
        stream = self.open
        if stream is not None and (
            now - stream.started >= self.options.stream_rollover or stream.sent >= self.options.stream_max_chars
        ):
            if not self.close(stream, wait=wait):
                return False
            stream = None
        used = stream.sent if stream is not None else len(safe_markdown(self.reopen))
        chunk = _chunk(pending, max(1, self.options.stream_max_chars - used))
        try:
            if stream is None:
                markdown = self.reopen + chunk
                sent = safe_markdown(markdown)
                args: dict[str, Any] = {"channel": thread.channel, "thread_ts": thread.thread_ts, "markdown_text": sent}
                if not thread.is_dm:  # Slack needs the reader outside DMs
                    args.update(recipient_user_id=thread.asker, recipient_team_id=thread.team)
                response = self.calls.call("chat.startStream", wait=wait, **args)
                if response is None:
                    return False
                stream = StreamMessage(ts=response["ts"], started=now, text=markdown, last_append=now, sent=len(sent))
                self.open, self.reopen = stream, ""
                self.messages.append(stream)
                if self.on_start is not None:
                    self.on_start(stream.ts)
            else:
                sent = safe_markdown(chunk)
                response = self.calls.call(
                    "chat.appendStream", wait=wait, channel=thread.channel, ts=stream.ts, markdown_text=sent
                )
                if response is None:
                    return False
                stream.text += chunk
                stream.sent += len(sent)
                stream.last_append = now
        except SlackApiError as exc:
            if stream is not None and error_code(exc) in STREAM_GONE:
                self._recover(stream, chunk)
                return True
            if http_status(exc) != 429:
                log.warning(
                    "job %s: streaming failed (%s); falling back to status edits", thread.job_id, error_code(exc)
                )
                thread.streaming = False
                self.doubtful = self.doubtful or http_status(exc) >= 500
            return False
        except Exception as exc:
            if not ambiguous(exc):
                raise
            log.warning(
                "job %s: streaming got no answer (%s); the answer will be posted as messages instead",
                thread.job_id,
                exc,
            )
            thread.streaming, self.doubtful = False, True
            return False
        self.streamed += len(chunk)
        thread.shown = True
        return True

    def _recover(self, stream: StreamMessage, chunk: str) -> None:
        """Slack ended the stream (expired, or stopped elsewhere): make its message final
        with chat.update, including the text that did not get in, and go on in a new one."""
        self.open = None
        full = stream.text + chunk
        fence = open_fence(full)
        closing = "\n" + fence_closer(fence) if fence else ""
        try:
            response = self.calls.call(
                "chat.update", wait=True, channel=self.thread.channel, ts=stream.ts, text=to_mrkdwn(full + closing)
            )
        except SlackApiError as exc:
            log.warning("job %s: could not finalize an expired stream: %s", self.thread.job_id, error_code(exc))
            response = None
        if response is not None:
            stream.text = full + closing
            self.streamed += len(chunk)
        else:
            fence = open_fence(stream.text)  # the chunk goes into the next stream instead
        self.reopen = fence + "\n" if fence else ""
        log.info("job %s: stream %s had expired; continuing in a new one", self.thread.job_id, stream.ts)

    # ------------------------------------------------------------------ stopping

    def close(
        self,
        stream: StreamMessage,
        *,
        wait: bool,
        extra: str = "",
        blocks: list[Block] | None = None,
        session_status: str | None = None,
    ) -> bool:
        """Stop ``stream`` (closing an open code fence, which the next stream reopens);
        ``session_status``: the agent session's status from here on (the answer's last stream)."""
        fence = open_fence(stream.text)
        closing = "\n" + fence_closer(fence) if fence else ""
        markdown = closing + extra
        try:
            response = self.calls.call(
                "chat.stopStream",
                wait=wait,
                channel=self.thread.channel,
                ts=stream.ts,
                markdown_text=safe_markdown(markdown) or None,
                blocks=blocks,
                session_status=session_status,
            )
            if response is None:
                return False
        except SlackApiError as exc:
            if http_status(exc) == 429:
                return False
            if error_code(exc) in STREAM_GONE:
                self.finalize_with_update(stream, markdown, blocks)
            else:
                log.warning("job %s: stopping stream %s failed: %s", self.thread.job_id, stream.ts, error_code(exc))
        stream.text += markdown
        if self.open is stream:
            self.open = None
        self.reopen = fence + "\n" if fence else ""
        return True

    def close_open(self, *, extra: str = "", blocks: list[Block] | None = None) -> None:
        """Stop the open stream, if any, waiting for the budget (the final message's way)."""
        if self.open is not None:
            self.close(self.open, wait=True, extra=extra, blocks=blocks)

    def finalize_with_update(self, stream: StreamMessage, extra: str, blocks: list[Block] | None) -> None:
        """A stream message that can no longer be stopped becomes a plain message."""
        mrkdwn = to_mrkdwn(stream.text + extra)
        args: dict[str, Any] = {"channel": self.thread.channel, "ts": stream.ts, "text": mrkdwn[:39_000]}
        if blocks is not None:
            args["blocks"] = sections(mrkdwn, self.options.section_limit)[:45] + blocks
        try:
            self.calls.call("chat.update", wait=True, **args)
        except SlackApiError as exc:
            log.warning("job %s: finalizing stream %s failed: %s", self.thread.job_id, stream.ts, error_code(exc))

    # ------------------------------------------------------------------ at the final message

    def flush(self, remainder: str) -> str:
        """Stream ``remainder`` (the end of the answer), waiting for the budget; what did
        not get in (streaming broke on the way) is returned."""
        while remainder and self.thread.streaming:
            before = self.streamed
            if not self.push(remainder, self.progress.clock(), wait=True):
                break
            remainder = remainder[self.streamed - before :]
        return remainder

    def finish(self, blocks: list[Block], session_status: str | None = None) -> bool:
        """End the streamed answer with ``blocks`` (footer, feedback) under its last message;
        True when its chat.stopStream carried ``session_status``."""
        if self.open is not None:
            return self.close(self.open, wait=True, blocks=blocks, session_status=session_status)
        # The last stream was already stopped (rolled over while tools ran).
        self.finalize_with_update(self.messages[-1], "", blocks)
        return False

    def discard(self) -> None:
        """Remove every stream message: they were drafts of a different final text."""
        self.close_open()
        for stream in self.messages:
            try:
                self.calls.call("chat.delete", wait=True, channel=self.thread.channel, ts=stream.ts)
            except SlackApiError as exc:
                log.warning(
                    "job %s: could not remove draft stream %s: %s", self.thread.job_id, stream.ts, error_code(exc)
                )
        self.messages.clear()

    def remove_foreign(self, recorded: list[str]) -> None:
        """Remove the streams of this question another run left (it died mid-answer and
        this run answers instead): drafts only, never finished by anyone."""
        own = {m.ts for m in self.messages}
        for ts in recorded:
            if ts in own:
                continue
            try:
                self.calls.call("chat.delete", wait=True, channel=self.thread.channel, ts=ts)
            except SlackApiError as exc:
                if error_code(exc) != "message_not_found":  # a takeover removed it already
                    log.warning(
                        "job %s: could not remove an earlier run's stream %s: %s",
                        self.thread.job_id,
                        ts,
                        error_code(exc),
                    )


def _chunk(pending: str, room: int) -> str:
    """At most ``room`` characters of ``pending`` as sent (escaped: ``<`` takes four), cut
    after a newline when one is near, else before a link being cut (each chunk is made
    safe on its own; only a single link longer than ``room`` is ever cut)."""
    if len(safe_markdown(pending)) <= room:
        return pending
    limit = room
    while True:
        chunk = pending[:limit]
        newline = chunk.rfind("\n", limit // 2)
        chunk = chunk[: newline + 1] if newline >= 0 else (settled(chunk) or chunk)
        if len(safe_markdown(chunk)) <= room or limit == 1:
            return chunk
        limit = max(1, limit // 2)
