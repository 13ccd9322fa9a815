"""A question's one final message in its thread, and the thread's final state.

The answer as mrkdwn split at Slack's limits (or, above 12,000 characters, ``answer.md``
uploaded with a summary, see upload.py), footer and feedback buttons on the last part;
with streaming, the rest of the answer is flushed into the stream and the buttons go
under its last message. Any other outcome is one message with its reason. Then the
status message turns into a one-line final state (Cancel removed) and ``eyes`` is
replaced by an outcome reaction.

Nothing here decides *whether* to post: the caller wrote the final into the outbox and
holds its delivery lease (jobs/outbox.py). What is decided here is *what is left* to
post: the idempotency unit is the Slack message. Every message of a final is a named
part ("p0", "p1"… for a split answer, "last" for the message carrying footer and
buttons, "upload" for answer.md, "outcome" for any other ending); each is recorded in
the outbox once posted and carries Slack ``metadata`` naming job and part. Every
attempt (the first too: a record can be lost with a failover, and a post whose answer
was lost is in the thread unrecorded) reads the thread once before it posts a part
that is not recorded (conversations.replies), and skips what is there. A "last" or
"outcome" there means the final is complete: only the thread's state is finished. A
post is never retried blind: the Slack client does not retry it (jobs/slack/web_api.py),
and a failure that leaves it unknown whether Slack posted it (a reset, a 5xx) raises;
the final stays pending and the next attempt looks first. The status message's final
state and the reactions are edits, done again; a status message whose ts was lost is
found in the thread by its ``askbox_status`` metadata. A streamed answer's streams
belong to the run that streamed them: a run or takeover that answers after that run
died removes them first (``AnswerStream.remove_foreign``, their ts kept under
``keys.answer_streams``) and posts the answer as messages. An upload carries no
metadata: one cut off between Slack's answer and its record is uploaded again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.slack_response import SlackResponse

from jobs import outbox
from jobs.final import Final, FinalKind
from jobs.outbox import Delivery, LeaseLost
from jobs.slack import agent_session
from jobs.slack.blocks import Block, feedback_actions, footer, plain_text, section, sections
from jobs.slack.in_thread import replies_page, status_in_thread, thread_messages
from jobs.slack.mrkdwn import split_message, summarize_for_file, to_mrkdwn
from jobs.slack.progress import count_steps, format_elapsed
from jobs.slack.state import ThreadPart
from jobs.slack.streaming import AnswerStream
from jobs.slack.upload import attach_answer
from jobs.slack.web_api import error_code, http_status

log = logging.getLogger(__name__)

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


@dataclass(eq=False)
class FinalMessage(ThreadPart):
    """Posts the final message once progress has stopped (the sender thread is joined)."""

    stream: AnswerStream  # what was streamed is finished, not posted again
    clock: Callable[[], float]
    delivery: Delivery | None = None  # this attempt's record of the parts posted
    _in_thread: dict[str, str] | None = None  # parts found in the thread (read once per attempt)
    _session_done: bool = False  # the answer's last chat.stopStream set the session's status

    def post(self, final: Final, delivery: Delivery | None = None) -> None:
        """The final message, then the thread's final state. A message that fails raises
        (the outbox keeps the final pending); the state edits are best effort."""
        self.delivery, self._in_thread = delivery, None
        try:
            if self._complete():
                pass  # the final is in the thread: only its state is left to finish
            elif final.kind == "answer":
                self._post_answer(final)
            else:
                self._post_outcome(final)
        except Exception:
            log.exception("job %s: posting the final %s to Slack failed", self.thread.job_id, final.kind)
            raise
        for step in (self._finish_status_message, self._finish_session, self._react):  # the reaction last: "done"
            try:
                step(final)
            except Exception:
                log.exception("job %s: finishing the Slack thread failed", self.thread.job_id)

    # ------------------------------------------------------------------ the answer

    def _post_answer(self, final: Final) -> None:
        stream = self.stream
        streamed = self.progress.text[: stream.streamed]
        if stream.messages and not stream.doubtful and final.text.startswith(streamed):
            self._finish_streamed_answer(final, final.text[len(streamed) :])
            return
        if stream.messages:
            # The final text is not what was streamed (an agent may rewrite it), or a
            # stream call got no answer (what the stream holds is unknown): the streams
            # were drafts. Remove them, so the answer is in the thread once.
            stream.discard()
        self._post_answer_messages(final)

    def _finish_streamed_answer(self, final: Final, remainder: str) -> None:
        note = self._attach_if_long(final)
        # The answer is already in the thread: its summary can only go under it.
        tail = ([section(summary)] if (summary := self._summary(final)) else []) + self._answer_tail(final, note)
        remainder = self.stream.flush(remainder)
        if remainder:
            # Streaming broke on the way: the rest goes out as ordinary messages.
            self.stream.close_open()
            self._post_parts(to_mrkdwn(self.stream.reopen + remainder), tail)
            return
        if final.summary:
            agent_session.rename(self.calls, self.thread, final.summary)  # before the stream ends the session
        self._session_done = self.stream.finish(tail, session_status=agent_session.status_after(final.kind))
        last = self.stream.messages[-1].ts if self.stream.messages else ""
        if self.delivery is not None:
            self.delivery.record("last", last)

    def _post_answer_messages(self, final: Final) -> None:
        note = self._attach_if_long(final)
        if note:
            mrkdwn = to_mrkdwn(summarize_for_file(final.text))
        else:
            mrkdwn = to_mrkdwn(final.text)
        if summary := self._summary(final):
            mrkdwn = f"{summary}\n\n{mrkdwn}"
        self._post_parts(mrkdwn, self._answer_tail(final, note))

    @staticmethod
    def _summary(final: Final) -> str:
        """The two or three lines a long answer (or one uploaded as a file) starts with."""
        return f"*In short:* {to_mrkdwn(final.summary)}" if final.summary else ""

    def _attach_if_long(self, final: Final) -> str:
        """Upload a very long answer as answer.md; the note to show, or "" if not uploaded."""
        if len(final.text) <= self.options.file_threshold:
            return ""
        if (note := self._already("upload")) is not None:
            return note
        note = attach_answer(self.calls, self.thread, final.text)
        if self.delivery is not None:
            self.delivery.record("upload", note)
        return note

    def _answer_tail(self, final: Final, note: str) -> list[Block]:
        """What goes under the answer's last part: the upload note, footer, feedback."""
        return ([section(note)] if note else []) + footer(final) + [feedback_actions(self.thread.job_id)]

    def _post_parts(self, mrkdwn: str, tail: list[Block]) -> None:
        """``mrkdwn`` as one or more thread replies; ``tail`` blocks under the last one."""
        parts = split_message(mrkdwn, self.options.part_limit) if mrkdwn.strip() else [""]
        for i, part in enumerate(parts[:-1]):
            self._post(f"p{i}", text=part)
        last = parts[-1]
        blocks = sections(last, self.options.section_limit) + tail
        fallback = last if last.strip() else plain_text(tail) or "Done."
        try:
            self._post("last", text=fallback, blocks=blocks)
        except SlackApiError as exc:
            if http_status(exc) == 429 or http_status(exc) >= 500:
                raise
            # Blocks refused (a limit we misjudged): the text must still arrive.
            log.warning("job %s: final blocks refused (%s); posting text only", self.thread.job_id, error_code(exc))
            self._post("last", text=(last + "\n\n" + plain_text(tail)).strip()[: self.options.part_limit])

    # ------------------------------------------------------------------ any other outcome

    def _post_outcome(self, final: Final) -> None:
        self.stream.close_open(extra="\n\n_(stopped before the answer was complete)_")
        shown = to_mrkdwn(final.text)
        if final.kind == "cancelled":
            # "Cancelled by <@U123>": askbox's own words, the canceller's id from Slack; a
            # mention, not the escaped text of one (only this kind: an error's text may
            # hold anything).
            shown = re.sub(r"&lt;@([UW][A-Z0-9]+)&gt;", r"<@\1>", shown)
        text = f"{STATUS_LINES[final.kind].split(' ', 1)[0]} {shown}"
        text = split_message(text, self.options.section_limit)[0]
        blocks = [section(text)] + footer(final)
        try:
            self._post("outcome", text=text, blocks=blocks)
        except SlackApiError as exc:
            if http_status(exc) == 429 or http_status(exc) >= 500:
                raise
            self._post("outcome", text=text)

    def _post(self, part: str, **args: Any) -> SlackResponse | None:
        """Post one part of the final, unless an earlier attempt already did."""
        delivery = self.delivery
        if delivery is None:
            return self._send(args)
        if self._already(part) is not None:
            return None
        if not delivery.holds():
            raise LeaseLost(f"job {delivery.job_id}: a newer delivery took the final over before part {part}")
        response = self._send({**args, "metadata": delivery.metadata(part)})
        if response is not None:
            delivery.record(part, str(response["ts"]))
        return response

    def _send(self, args: dict[str, Any]) -> SlackResponse | None:
        return self.calls.call(
            "chat.postMessage",
            wait=True,
            channel=self.thread.channel,
            thread_ts=self.thread.thread_ts,
            unfurl_links=False,
            unfurl_media=False,
            **args,
        )

    def _complete(self) -> bool:
        """A whole final of this question is in the thread already (an earlier attempt
        posted its "last" or "outcome" part, and maybe lost the record of it)."""
        return self._already("last") is not None or self._already("outcome") is not None

    def _already(self, part: str) -> str | None:
        """What an earlier attempt left of ``part``: its record, or our message in the
        thread carrying the part's metadata (the thread is read once per attempt)."""
        delivery = self.delivery
        if delivery is None:
            return None
        if (recorded := delivery.posted(part)) is not None:
            return recorded
        if self._in_thread is None:
            self._in_thread = self._parts_in_thread()
        found = self._in_thread.get(part)
        if found is not None:
            delivery.record(part, found)
        return found

    def _parts_in_thread(self) -> dict[str, str]:
        thread = self.thread
        if not thread.thread_ts:
            return {}
        fetch = replies_page(
            lambda **args: self.calls.call("conversations.replies", wait=True, **args), thread.channel, thread.thread_ts
        )
        try:
            messages = thread_messages(fetch)
        except SlackApiError as exc:
            if http_status(exc) == 429 or http_status(exc) >= 500:
                raise  # try again later, never post blind
            # Slack will not show us the thread (no history scope for it, or no such
            # thread): nothing to find, ever. Posting beats losing the answer.
            log.warning(
                "job %s: cannot read the thread (%s); posting the final's unrecorded parts",
                thread.job_id,
                error_code(exc),
            )
            return {}
        if thread.status_ts is None:  # the status message's ts was lost: finish it anyway
            thread.status_ts = status_in_thread(messages, thread.job_id)
        return outbox.parts_in_thread(messages, thread.job_id)

    # ------------------------------------------------------------------ the thread's final state

    def _finish_status_message(self, final: Final) -> None:
        """The status message becomes one line of final state; its Cancel button goes."""
        thread = self.thread
        if thread.status_ts is None:
            return
        with self.progress.lock:
            steps, begun = self.progress.step_count, self.progress.begun
        took = final.duration if final.duration is not None else (self.clock() - begun if begun else None)
        line = STATUS_LINES[final.kind]
        if took is not None:
            line += f" · {format_elapsed(took)}"
        if steps:
            line += f" · {count_steps(steps)}"
        try:
            self.calls.call(
                "chat.update", wait=True, channel=thread.channel, ts=thread.status_ts, text=line, blocks=[section(line)]
            )
        except SlackApiError as exc:
            log.warning("job %s: final status edit failed: %s", thread.job_id, error_code(exc))

    def _finish_session(self, final: Final) -> None:
        """The agent session leaves ``processing``: ``active`` with the answer (renamed
        after its summary), ``closed`` otherwise (jobs/slack/agent_session.py)."""
        if self._session_done:
            return
        if final.summary and final.kind == "answer":
            agent_session.rename(self.calls, self.thread, final.summary)
        agent_session.set_status(self.calls, self.thread, agent_session.status_after(final.kind))

    def _react(self, final: Final) -> None:
        """``eyes`` (the bot's "working on it") gives way to the outcome's reaction."""
        thread = self.thread
        if not thread.message_ts:
            return
        calls = (
            ("reactions.remove", WORKING_REACTION, {"no_reaction"}),
            ("reactions.add", REACTIONS[final.kind], {"already_reacted"}),
        )
        for method, name, fine in calls:
            try:
                self.calls.call(method, wait=True, channel=thread.channel, timestamp=thread.message_ts, name=name)
            except SlackApiError as exc:
                if error_code(exc) not in fine:
                    log.warning("job %s: %s %s failed: %s", thread.job_id, method, name, error_code(exc))
