"""Live progress while the agent works: edits of the status message, and the assistant
thread status.

- The bot's status message (``keys.status_message``, posted after the bot's ack; or
  ``job.meta["slack_status_ts"]`` / ``origin.status_ts``; posted here when the bot did
  not, jobs/slack/status_owner.py) is edited with what is being done ("On it: `web` at
  `a1b2c3d` with …"), the elapsed time, the agent's last tool steps in plain words and,
  without streaming, a preview of the answer; its Cancel button stays until the end (the
  final message turns it into one line).
- ``assistant.threads.setStatus`` shows what the agent does, re-set before its 2 minute
  expiry (switched off at the first refusal: it only works in assistant threads).

Both only ever send the newest state when the budget allows (progress calls never
wait): updates coalesce, never queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from slack_sdk.errors import SlackApiError

from jobs.slack import status_owner
from jobs.slack.blocks import Block, cancel_actions, section
from jobs.slack.in_thread import status_in_thread, status_metadata, thread_messages
from jobs.slack.mrkdwn import escape, open_fence, split_message, to_mrkdwn
from jobs.slack.state import ThreadPart
from jobs.slack.web_api import ambiguous, error_code, http_status

log = logging.getLogger(__name__)

STATUS_GONE = {"message_not_found", "cant_update_message"}  # the status message was deleted


def headline(pin: dict) -> str | None:
    """ "On it: `web` at `a1b2c3d` with gemini-2.5-flash ·": what the question runs on, from
    the job's pin (jobs/job.py), or None before it is pinned."""
    if not pin.get("repo"):
        return None
    line = f"On it: `{escape(str(pin['repo']))}`"
    if pin.get("commit"):
        line += f" at `{str(pin['commit'])[:7]}`"
    if pin.get("model"):
        line += f" with {escape(str(pin['model']))}"
    return line + " ·"


def format_elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def count_steps(count: int) -> str:
    return f"{count} step{'s' if count != 1 else ''}"


@dataclass(eq=False)
class StatusMessage(ThreadPart):
    """The status message's edits while the agent works (the sender thread's only)."""

    _shown_version: int = field(default=-1, init=False)
    _last_edit: float = field(default=float("-inf"), init=False)
    _posted_own: bool = field(default=False, init=False)  # we posted it (the bot's was gone)
    _look_first: bool = field(default=True, init=False)  # read the thread before posting our own
    # Who posts the status message (jobs/slack/status_owner.py): the bot after its ack, or
    # this worker when the bot did not. None: the caller settled it (tests, old bots).
    redis: Redis | None = None
    claim_ttl: int = 60
    _owner_settled: bool = field(default=False, init=False)

    def update(self, now: float) -> None:
        """Edit the status message if something changed (or it has been idle too long)."""
        thread = self.thread
        with self.progress.lock:
            version = self.progress.version
        changed = version != self._shown_version and now - self._last_edit >= self.options.progress_interval
        if not (changed or now - self._last_edit >= self.options.idle_refresh):
            return
        text, blocks = self.render(now)
        try:
            if thread.status_ts is None:
                if self._posted_own:
                    return  # ours was deleted too: progress stays in the stream and the meta
                if not self._settle_owner():
                    return  # the bot is posting it right now: the next tick edits it
                if thread.status_ts is None and self._look_first:
                    # The bot's post may have reached Slack with its answer lost: adopt it
                    # rather than leave a second status message (and its Cancel) behind.
                    found = self._find_in_thread()
                    if found is None:
                        return  # no budget now: the next tick
                    self._look_first = False
                    thread.status_ts = found or None
            if thread.status_ts is None:
                response = self._post_own(text, blocks)
                if response is not None:
                    self._posted_own = True
                    thread.status_ts = response["ts"]
                    if self.redis is not None:
                        status_owner.posted(self.redis, thread.job_id, response["ts"])
            else:
                response = self.calls.attempt(
                    "chat.update", channel=thread.channel, ts=thread.status_ts, text=text, blocks=blocks
                )
        except SlackApiError as exc:
            self._last_edit = now  # back off until the next interval
            if error_code(exc) in STATUS_GONE:
                thread.status_ts = None  # deleted: post one of our own next time
                self._owner_settled = True  # (not the deleted one's ts again)
            elif http_status(exc) != 429:
                log.warning("job %s: status message edit failed: %s", thread.job_id, error_code(exc))
            return
        if response is None:
            return  # no budget now: the next tick sends the newest state instead
        self._last_edit, self._shown_version = now, version
        with self.progress.lock:
            if self.progress.step_count or (self.progress.text and not thread.streaming):
                thread.shown = True

    def _settle_owner(self) -> bool:
        """Whether this worker may go on to post the status message itself: the bot's is
        there (adopted), or nobody is posting one (we take the claim). False while the bot
        holds the claim: it posts after its acknowledgement, or its claim lapses."""
        if self.redis is None or self._owner_settled:
            return True
        owner = status_owner.read(self.redis, self.thread.job_id)
        if owner.ts is not None:
            self.thread.status_ts = owner.ts
        elif owner.pending or status_owner.take(self.redis, self.thread.job_id, self.claim_ttl) is None:
            return False
        self._owner_settled = True
        return True

    def _find_in_thread(self) -> str | None:
        """The ts of this question's status message in the thread, "" if there is none,
        None when the budget says not now."""
        thread = self.thread
        if not thread.thread_ts:
            return ""
        pages: list[object] = []

        def fetch(cursor: str | None) -> Any:
            response = self.calls.attempt(
                "conversations.replies",
                channel=thread.channel,
                ts=thread.thread_ts,
                limit=200,
                include_all_metadata=True,
                cursor=cursor,
            )
            pages.append(response)
            return response or {}

        try:
            messages = thread_messages(fetch)
        except SlackApiError as exc:
            if http_status(exc) == 429:
                return None
            log.info("job %s: cannot read the thread (%s); posting a status message", thread.job_id, error_code(exc))
            return ""
        if None in pages:
            return None
        return status_in_thread(messages, thread.job_id) or ""

    def _post_own(self, text: str, blocks: list[Block]) -> Any:
        """Post a status message of our own (with the metadata that finds it again)."""
        thread = self.thread
        try:
            return self.calls.attempt(
                "chat.postMessage",
                channel=thread.channel,
                thread_ts=thread.thread_ts,
                text=text,
                blocks=blocks,
                metadata=status_metadata(thread.job_id),
            )
        except Exception as exc:
            if not ambiguous(exc):
                raise
            # Slack may have posted it: never post blind; read the thread next time.
            log.warning(
                "job %s: posting a status message got no answer (%s); looking in the thread next", thread.job_id, exc
            )
            self._look_first = True
            return None

    def render(self, now: float) -> tuple[str, list[Block]]:
        """The status message now: its notification text and its blocks."""
        progress = self.progress
        with progress.lock:
            steps = [(s.summary, s.ok, s.detail) for s in progress.steps]
            count, text, begun = progress.step_count, progress.text, progress.begun or now
        head = f":hourglass_flowing_sand: {self.thread.headline or 'Working…'} {format_elapsed(now - begun)}"
        if count:
            head += f" · {count_steps(count)}"
        lines = [head]
        for summary, ok, detail in steps:
            mark = "…" if ok is None else "✓" if ok else "✗"
            line = f"{mark} {escape(summary[:150])}"
            if ok is False and detail:
                line += f" — _{escape(detail[:100])}_"
            lines.append(line)
        blocks = [section("\n".join(lines))]
        if text.strip() and not self.thread.streaming:
            preview = to_mrkdwn(_tail(text, self.options.preview_chars))
            blocks.append(section(split_message(preview, self.options.section_limit - 100)[-1]))
        blocks.append(cancel_actions(self.thread.job_id))
        return head, blocks


@dataclass(eq=False)
class AssistantStatus(ThreadPart):
    """``assistant.threads.setStatus``: the agent's current step under the thread."""

    _on: bool = field(default=True, init=False)  # off for good after Slack's first refusal
    _text: str | None = field(default=None, init=False)
    _set_at: float = field(default=float("-inf"), init=False)

    def update(self, now: float) -> None:
        thread = self.thread
        if not self._on or not thread.thread_ts:
            return
        with self.progress.lock:
            running = [s.summary for s in self.progress.steps if s.ok is None]
        status = f"is working: {running[-1]}" if running else "is working…"
        status = status if len(status) <= 100 else status[:99] + "…"
        since = now - self._set_at
        due = since >= self.options.status_refresh or (
            status != self._text and since >= self.options.status_min_interval
        )
        if not due:
            return
        try:
            response = self.calls.attempt(
                "assistant.threads.setStatus", channel_id=thread.channel, thread_ts=thread.thread_ts, status=status
            )
        except SlackApiError as exc:
            if http_status(exc) != 429:
                # Not an assistant thread, or no scope for it: it will not work later either.
                log.info("job %s: assistant status unavailable (%s)", thread.job_id, error_code(exc))
                self._on = False
            return
        if response is not None:
            self._set_at, self._text = now, status


def _tail(markdown: str, chars: int) -> str:
    """The end of a partial answer, from a line start, with its code fence reopened."""
    if len(markdown) <= chars:
        return markdown
    cut = len(markdown) - chars
    newline = markdown.find("\n", cut, cut + 200)
    cut = newline + 1 if newline >= 0 else cut
    fence = open_fence(markdown[:cut])
    return "…\n" + (fence + "\n" if fence else "") + markdown[cut:]
