"""From a Slack message to a queued question: validate, claim, enqueue, acknowledge.

This is all a listener does; answering happens in a worker.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from redis import Redis, RedisError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.parse import USAGE, parse
from bot.settings import BotSettings
from jobs.settings import Settings
from jobs import access, claims, keys, tracing
from jobs import queue as jobs_queue
from jobs.crash_points import crash_point
from jobs.question import Origin, Question, sanitize_id
from jobs.replicas import replicated
from jobs.slack.blocks import status_blocks
from jobs.slack.web_api import ambiguous
from jobs.slack.in_thread import replies_page, status_in_thread, thread_messages, status_metadata
from sandbox.agents.models import ModelRefused, check_model
from sandbox.agents.settings import AGENT_NAMES as AGENTS

log = logging.getLogger(__name__)


class SlackMessage(BaseModel):
    """The fields of a message event we rely on; the rest is ignored."""

    model_config = ConfigDict(extra="ignore")

    type: str
    user: str | None = None
    text: str = ""
    ts: str
    channel: str
    thread_ts: str | None = None
    channel_type: str | None = None
    subtype: str | None = None
    bot_id: str | None = None
    team: str | None = None


class Ingress:
    def __init__(self, redis: Redis, client: WebClient, settings: Settings, bot: BotSettings) -> None:
        self.redis = redis
        self.client = client
        self.settings = settings
        self.bot = bot

    # -- which messages are questions ---------------------------------------------------

    @tracing.traced("askbox.bot.event")  # a question's trace starts here (jobs/tracing.py)
    def on_event(self, body: dict[str, Any]) -> str:
        """Handle one delivered event; returns what was done, for logs and tests."""
        try:
            event = SlackMessage.model_validate(body.get("event") or {})
        except ValidationError as exc:
            log.warning("ignoring a malformed event %s: %s", body.get("event_id"), exc.errors()[:3])
            return "malformed"
        team = event.team or body.get("team_id") or "-"
        if event.bot_id or event.subtype or not event.user:
            return "ignored"  # bots (us included), edits, joins, deletions
        if event.type == "message" and not self._addressed_to_us(event, team):
            return "ignored"
        # Slack Connect: a channel shared with another organisation, or an asker whose
        # workspace is not the one we are installed in (jobs/access.py).
        shared = bool(body.get("is_ext_shared_channel")) or (
            event.team is not None and body.get("team_id") is not None and event.team != body["team_id"])
        return self._handle(event, team, shared)

    def _addressed_to_us(self, event: SlackMessage, team: str) -> bool:
        if event.channel_type == "im":
            return True
        # A reply in a thread where we were mentioned: a follow-up, no new mention needed;
        # by default only from the person who asked there (others are talking to each
        # other), ASKBOX_FOLLOW_UPS=anyone for everyone in the channel. A mention is always
        # a question (app_mention, handled without this check).
        if not event.thread_ts:
            return False
        asker = self.redis.get(keys.mentioned_thread(team, event.channel, event.thread_ts))
        if asker is None:
            return False
        # "1": a thread marked before the asker was recorded; its follow-ups stay open.
        return self.bot.follow_ups == "anyone" or asker.decode() in {event.user, "1"}

    # -- one question -------------------------------------------------------------------

    def _handle(self, event: SlackMessage, team: str, shared: bool = False) -> str:
        thread_ts = event.thread_ts or event.ts
        # Claimed only now that we know we handle it: one message, one outcome, however
        # often it is delivered (retries, app_mention plus message.*, two bot processes).
        # Pending (short) until the outcome is in Redis, so a bot killed mid-way leaves
        # nothing that turns Slack's redelivery into "duplicate" (jobs/claims.py).
        claim = keys.event_claim(team, event.channel, event.ts)
        token = claims.take(self.redis, claim, self.settings.jobs.pending_claim_ttl)
        if token is None:
            if claims.confirmed(self.redis, claim):
                return "duplicate"
            # Another delivery is being handled right now, or its bot died mid-way: not
            # acknowledged, so Slack delivers it again, after the pending claim lapsed.
            raise jobs_queue.ClaimPending(f"event {event.channel}/{event.ts} is pending elsewhere")
        posted: list[str] = []  # listeners run concurrently: per-call state only
        try:
            outcome = self._accept(event, team, thread_ts, posted, shared)
        except jobs_queue.ClaimPending:
            with contextlib.suppress(RedisError):
                claims.release(self.redis, claim, token)
            raise
        except RedisError:
            # Redis went away mid-way: give the message back so Slack's redelivery (we do
            # not ack) can try again, and take back what the thread already shows.
            with contextlib.suppress(RedisError):
                claims.release(self.redis, claim, token)
            for ts in posted:
                self._call("chat_delete", channel=event.channel, ts=ts)
            raise
        # A crash before this line: the job (if any) is found by the redelivery. Waited
        # for on a replica (when there are any) before Slack gets its ack: a failover
        # must not lose a question Slack will not deliver again (jobs/replicas.py).
        replicated(self.redis, lambda conn: claims.confirm(conn, claim, token), f"the claim of {claim}")
        return outcome

    def _accept(self, event: SlackMessage, team: str, thread_ts: str, posted: list[str], shared: bool) -> str:
        parsed = parse(event.text)
        if parsed.help:
            self._post(event.channel, thread_ts, USAGE)
            return "help"
        jobs = self.settings.jobs
        origin = Origin(kind="slack", user=event.user or "", team=team, channel=event.channel,
                        thread_ts=thread_ts, message_ts=event.ts, shared=shared)
        # Only what this place may ask about is named, or even said to exist: a refused
        # repository reads like an unknown one, and only the asker sees either.
        repos = access.visible(jobs.repos, origin, jobs.repo_access, jobs.channel_repos)
        repo = parsed.repo or jobs.channel_repos.get(event.channel)
        if jobs.repos and (repo not in repos if repo is not None else not repos):
            known = ", ".join(f"`{name}`" for name in sorted(repos))
            text = f"Repositories you may ask about here: {known}." if known else "No repository is open here."
            if repo is not None:
                text = f"I can't answer about the repository `{repo}` here. {text}"
            self._call("chat_postEphemeral", channel=event.channel, user=event.user, thread_ts=thread_ts, text=text)
            return "rejected"
        refusal = self._model_refusal(parsed.agent, parsed.model)
        if refusal is not None:
            self._post(event.channel, thread_ts, refusal)
            return "rejected"
        job_id = sanitize_id(origin.event_key() or "")
        if jobs_queue.exists(self.redis, job_id):
            return "duplicate"  # queued by an attempt that died before confirming its claim
        self._react(event.channel, event.ts, "eyes")
        position = jobs_queue.waiting(self.redis)
        status = self._status_message(event, team, thread_ts, job_id, position, posted)
        crash_point(self.settings.jobs.test_crash_at, "after-claim")
        try:
            question = Question(
                origin=origin.model_copy(update={"status_ts": status}), text=parsed.text, repo=repo,
                agent=parsed.agent, model=parsed.model, fresh=parsed.fresh, id=job_id,
            )
        except ValidationError as exc:
            self._refuse(event, thread_ts, status, exc.errors()[0]["msg"].removeprefix("Value error, "))
            return "rejected"
        try:
            jobs_queue.enqueue(self.redis, question, self.settings.jobs)
        except jobs_queue.QueueFull as exc:
            self._refuse(event, thread_ts, status, str(exc))
            return "refused"
        # The thread's first asker stays its asker; every question keeps the thread open longer.
        mentioned = keys.mentioned_thread(team, event.channel, thread_ts)
        if not self.redis.set(mentioned, event.user or "", nx=True, ex=keys.CLAIM_TTL):
            self.redis.expire(mentioned, keys.CLAIM_TTL)
        return "queued"

    def _status_message(self, event: SlackMessage, team: str, thread_ts: str, job_id: str, position: int,
                        posted: list[str]) -> str | None:
        """The question's "Queued" message: the one an attempt that died before enqueueing
        posted (remembered under ``keys.pending_status``), or a new one."""
        text = f"Queued (position {position + 1})."
        blocks = status_blocks(f":hourglass_flowing_sand: {text}", job_id)
        remembered = keys.pending_status(team, event.channel, event.ts)
        earlier = self.redis.get(remembered)
        if earlier is not None and self._call("chat_update", channel=event.channel, ts=earlier.decode(),
                                              text=text, blocks=blocks):
            return earlier.decode()
        status = self._post(event.channel, thread_ts, text, blocks=blocks, job_id=job_id)
        if status:
            posted.append(status)
            self.redis.set(remembered, status, ex=keys.DAY)
        return status

    def _model_refusal(self, agent: str | None, model: str | None) -> str | None:
        """Why ``model=`` may not run (it reaches the agent's argv), or None. An unknown
        agent is left to the question's own validation, which names the known ones."""
        name = agent or self.settings.agents.agent
        if model is None or name not in AGENTS:
            return None
        try:
            check_model(name, model, self.settings.agents)  # type: ignore[arg-type]
        except ModelRefused as exc:
            return str(exc)
        return None

    def _refuse(self, event: SlackMessage, thread_ts: str, status: str | None, text: str) -> None:
        if status:
            self._call("chat_update", channel=event.channel, ts=status, text=text, blocks=[])
        else:
            self._post(event.channel, thread_ts, text)
        self._react(event.channel, event.ts, "no_entry")

    # -- Slack calls: an error here must not lose the question ----------------------------

    def _post(self, channel: str, thread_ts: str, text: str, blocks: list | None = None,
              job_id: str | None = None) -> str | None:
        """Post in the thread; the message's ts, or None. ``job_id``: the question's status
        message, posted with metadata that finds it again (jobs/slack/in_thread.py).

        A post is never retried blind (jobs/slack/web_api.py): when Slack's answer is lost
        after the request went out, a status message is looked for in the thread, and
        any other reply (help, a refusal) is left at most once."""
        extra: dict[str, Any] = {"blocks": blocks} if blocks else {}
        if job_id is not None:
            extra["metadata"] = status_metadata(job_id)
        try:
            return self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=text, **extra)["ts"]
        except Exception as exc:
            if not ambiguous(exc):
                if isinstance(exc, SlackApiError):
                    log.warning("slack chat_postMessage failed: %s", exc.response.get("error"))
                    return None
                raise  # not sent (Slack unreachable): not acknowledged, Slack delivers it again
            log.warning("slack chat_postMessage got no answer (%s); not posting it again", exc)
        if job_id is None:
            return None
        try:
            found = status_in_thread(thread_messages(
                replies_page(self.client.conversations_replies, channel, thread_ts)), job_id)
        except Exception as exc:  # noqa: BLE001 - then the worker looks again before posting its own
            log.warning("could not look for the status message of %s in the thread: %s", job_id, exc)
            return None
        return found

    def _react(self, channel: str, ts: str, name: str) -> None:
        self._call("reactions_add", channel=channel, timestamp=ts, name=name)

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(**kwargs)
        except SlackApiError as exc:
            log.warning("slack %s failed: %s", method, exc.response.get("error"))
            return None
