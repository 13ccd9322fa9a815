"""From a Slack message to a queued question: validate, claim, enqueue, acknowledge; then reply.

A listener does two things, in this order:

1. ``accept`` (Redis only): validate, claim the delivery, queue the question, confirm the
   claim. Bolt acknowledges when the listener returns, so Slack's 3 s are spent on a few
   Redis round trips, never on Slack's own latency or its per-channel post limits.
2. ``reply`` (after the acknowledgement, on the bot's reply pool): the ``eyes`` reaction
   and the status message ("On it: `web` with gemini-2.5-flash, position 2"), or the
   help text, a refusal only the asker sees, the repository picker.

Exactly once survives the split: the question's job exists before Slack gets its ack (a
redelivery finds the claim confirmed), and its status message has one owner
(jobs/slack/status_owner.py): a bot that dies between the ack and its post leaves a
queued question whose worker posts the status message itself. Help texts and refusals
are posted at most once (a post is never retried blind).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from redis import Redis, RedisError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import after_ack
from bot.parse import USAGE, parse
from bot.settings import BotSettings
from jobs import access, claims, keys, tracing
from jobs import queue as jobs_queue
from jobs.crash_points import crash_point
from jobs.question import Origin, Question, sanitize_id
from jobs.redis_text import text
from jobs.replicas import replicated
from jobs.settings import Settings
from jobs.slack import status_owner
from jobs.slack.blocks import status_blocks
from jobs.slack.in_thread import replies_page, status_in_thread, status_metadata, thread_messages
from jobs.slack.web_api import ambiguous
from sandbox.agents.adapters import agent_for
from sandbox.agents.models import ModelRefused, check_model
from sandbox.agents.settings import AGENT_NAMES as AGENTS

log = logging.getLogger(__name__)

# An interaction (a click, a modal) is never delivered again: a second one racing the first
# (a double click) waits this long for the first's outcome rather than failing.
INTERACTION_WAIT = 2.0
Kind = Literal["queued", "duplicate", "help", "rejected", "refused", "pick", "ignored", "malformed"]


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


@dataclass(frozen=True)
class Asked:
    """One question as a surface delivered it (a mention, a DM, ``/askbox``, a modal, a
    picked repository): where it goes, what was typed, and what makes it one."""

    origin: Origin  # the thread the answer goes to, the message carrying the reactions
    text: str  # as typed: options (repo=, agent=, model=) are parsed out here
    claim: str  # the delivery's claim (keys.event_claim, or the surface's own)
    job_id: str
    repo: str | None = None  # picked in a modal or the picker: wins over repo= in the text
    context: str = ""  # appended to the question as asked, never parsed (a quoted message)


@dataclass(frozen=True)
class Reply:
    """What to post once Slack has its acknowledgement; ``kind`` says what was done."""

    kind: Kind
    origin: Origin | None = None
    job_id: str | None = None
    text: str = ""  # the help text, a refusal, or the status message's line
    private: bool = False  # only the asker sees it (chat.postEphemeral)
    react: str | None = None  # on the asker's message
    choices: tuple[str, ...] = ()  # "pick": the repositories to pick from
    pick: str | None = None  # "pick": the token of the waiting question (keys.repo_pick)


class Ingress:
    def __init__(
        self,
        redis: Redis,
        client: WebClient,
        settings: Settings,
        bot: BotSettings,
        replies: ThreadPoolExecutor | None = None,
    ) -> None:
        self.redis = redis
        self.client = client
        self.settings = settings
        self.bot = bot
        # Replies run here, after the listener returned (Bolt acknowledged). Bounded: a
        # burst queues its replies instead of opening a thread per event.
        self.replies = replies or ThreadPoolExecutor(max_workers=bot.reply_threads, thread_name_prefix="reply")

    # -- which messages are questions ---------------------------------------------------

    @tracing.traced("askbox.bot.event")  # a question's trace starts here (jobs/tracing.py)
    def event(self, body: dict[str, Any]) -> Reply:
        """An event listener's whole work: accept it, and defer its reply within its span
        (the reaction and status message posted after the ack are the trace's too)."""
        return self.later(self.on_event(body))

    def on_event(self, body: dict[str, Any]) -> Reply:
        """Accept one delivered event (Redis only); the reply is for ``later``."""
        try:
            event = SlackMessage.model_validate(body.get("event") or {})
        except ValidationError as exc:
            log.warning("ignoring a malformed event %s: %s", body.get("event_id"), exc.errors()[:3])
            return Reply("malformed")
        team = event.team or body.get("team_id") or "-"
        if event.bot_id or event.subtype or not event.user:
            return Reply("ignored")  # bots (us included), edits, joins, deletions
        if event.type == "message" and not self._addressed_to_us(event, team):
            return Reply("ignored")
        # Slack Connect: a channel shared with another organisation, or an asker whose
        # workspace is not the one we are installed in (jobs/access.py).
        shared = bool(body.get("is_ext_shared_channel")) or (
            event.team is not None and body.get("team_id") is not None and event.team != body["team_id"]
        )
        origin = Origin(
            kind="slack",
            user=event.user,
            team=team,
            channel=event.channel,
            thread_ts=event.thread_ts or event.ts,
            message_ts=event.ts,
            shared=shared,
        )
        return self.accept(
            Asked(
                origin=origin,
                text=event.text,
                claim=keys.event_claim(team, event.channel, event.ts),
                job_id=sanitize_id(origin.event_key() or ""),
            )
        )

    def _addressed_to_us(self, event: SlackMessage, team: str) -> bool:
        if event.channel_type == "im":
            return True  # the Messages tab: every message there is a question (its own thread)
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
        return self.bot.follow_ups == "anyone" or text(asker) in {event.user, "1"}

    # -- one question (Redis only) --------------------------------------------------------

    def accept(self, asked: Asked, wait: float = 0.0) -> Reply:
        """Claim the delivery and queue the question; Redis only, so Slack's ack is quick.

        Claimed only now that we know we handle it: one message, one outcome, however often
        it is delivered (retries, app_mention plus message.*, two bot processes). Pending
        (short) until the outcome is in Redis, so a bot killed mid-way leaves nothing that
        turns Slack's redelivery into "duplicate" (jobs/claims.py)."""
        deadline = time.monotonic() + wait
        while (token := claims.take(self.redis, asked.claim, self.settings.jobs.pending_claim_ttl)) is None:
            if claims.confirmed(self.redis, asked.claim):
                return Reply("duplicate", asked.origin, asked.job_id)
            if time.monotonic() >= deadline:
                # Another delivery is being handled right now, or its bot died mid-way: not
                # acknowledged, so Slack delivers it again, after the pending claim lapsed.
                # (``wait``: an interaction, which Slack never delivers again, waits for the
                # other delivery's outcome instead: a second click while the first is handled.)
                if wait:
                    return Reply("duplicate", asked.origin, asked.job_id)
                raise jobs_queue.ClaimPending(f"{asked.claim} is pending elsewhere")
            time.sleep(0.05)
        try:
            reply = self._accept(asked)
        except (jobs_queue.ClaimPending, RedisError):
            # Nothing was queued (or Redis went away mid-way): give the delivery back, so
            # Slack's redelivery (we do not ack) can try again.
            with contextlib.suppress(RedisError):
                claims.release(self.redis, asked.claim, token)
            raise
        # A crash before this line: the job (if any) is found by the redelivery. Waited
        # for on a replica (when there are any) before Slack gets its ack: a failover
        # must not lose a question Slack will not deliver again (jobs/replicas.py).
        replicated(self.redis, lambda conn: claims.confirm(conn, asked.claim, token), f"the claim of {asked.claim}")
        return reply

    def _accept(self, asked: Asked) -> Reply:
        origin = asked.origin
        parsed = parse(asked.text)
        if parsed.help and asked.repo is None:
            return Reply("help", origin, text=USAGE)
        jobs = self.settings.jobs
        # Only what this place may ask about is named, or even said to exist: a refused
        # repository reads like an unknown one, and only the asker sees either.
        repos = access.visible(jobs.repos, origin, jobs.repo_access, jobs.channel_repos)
        repo = asked.repo or parsed.repo or jobs.channel_repos.get(origin.channel or "")
        if jobs.repos:
            if refused(repo, repos):
                return Reply("rejected", origin, text=refusal(repo, repos), private=True)
            if repo is None and len(repos) > 1:
                return self._wait_for_pick(asked, tuple(sorted(repos)))
        model_refusal = self.model_refusal(parsed.agent, parsed.model)
        if model_refusal is not None:
            return Reply("rejected", origin, text=model_refusal)
        try:
            question = Question(
                origin=origin,
                text=parsed.text + asked.context,
                repo=repo,
                agent=parsed.agent,
                model=parsed.model,
                fresh=parsed.fresh,
                id=asked.job_id,
            )
        except ValidationError as exc:
            return Reply("refused", origin, text=exc.errors()[0]["msg"].removeprefix("Value error, "), react="no_entry")
        crash_point(self.settings.jobs.test_crash_at, "after-claim")
        try:
            enqueued = jobs_queue.enqueue(self.redis, question, jobs, locate=False)
        except jobs_queue.QueueFull as exc:
            return Reply("refused", origin, text=str(exc), react="no_entry")
        if enqueued.duplicate:
            return Reply("duplicate", origin, asked.job_id)  # queued by an attempt that died before confirming
        self._remember(question)
        where = f"position {(enqueued.waiting or 0) + 1}"
        return Reply("queued", origin, question.id, text=f"On it: {self._what(question)}, {where}.", react="eyes")

    def _remember(self, question: Question) -> None:
        """The thread's asker (follow-ups), its latest question (Slack's stop button) and the
        asker's recent questions (App Home), in one round trip."""
        origin = question.origin
        team, channel, thread = origin.team or "-", origin.channel or "", origin.thread_ts or ""
        mentioned = keys.mentioned_thread(team, channel, thread)
        recent = keys.user_questions(team, origin.user)
        daily = [keys.daily_usage("user", origin.user)] + ([keys.daily_usage("channel", channel)] if channel else [])
        with self.redis.pipeline(transaction=False) as pipe:
            for key in daily:  # beside the gateway's tokens and cost of the day (/askbox usage, App Home)
                pipe.hincrby(key, "questions", 1)
                pipe.expire(key, keys.DAILY_TTL)
            # The thread's first asker stays its asker; every question keeps it open longer.
            pipe.set(mentioned, origin.user, nx=True, ex=keys.CLAIM_TTL)
            pipe.expire(mentioned, keys.CLAIM_TTL)
            pipe.set(keys.thread_question(team, channel, thread), question.id, ex=keys.CLAIM_TTL)
            pipe.lpush(recent, question.id)
            pipe.ltrim(recent, 0, keys.RECENT_QUESTIONS - 1)
            pipe.expire(recent, keys.CLAIM_TTL)
            pipe.execute()

    def _what(self, question: Question) -> str:
        """ "`web` with gemini-2.5-flash": the repository and the model that will answer."""
        what = f"`{question.repo}`" if question.repo else "the repository"
        try:
            model = agent_for(question.agent, self.settings.agents).model(question.model)
        except ValueError:
            model = None
        return f"{what} with {model}" if model else what

    def _wait_for_pick(self, asked: Asked, choices: tuple[str, ...]) -> Reply:
        """No repository named, no default here, several open: the question waits (a day)
        for its asker to pick one (bot/picker.py)."""
        token = sanitize_id(asked.job_id)
        waiting = {
            "origin": asked.origin.model_dump(mode="json"),
            "text": asked.text,
            "claim": asked.claim,
            "job_id": asked.job_id,
            "context": asked.context,
        }
        self.redis.set(keys.repo_pick(token), json.dumps(waiting), ex=keys.DAY)
        return Reply(
            "pick",
            asked.origin,
            asked.job_id,
            choices=choices,
            pick=token,
            private=True,
            text="Which repository is this about?",
        )

    def model_refusal(self, agent: str | None, model: str | None) -> str | None:
        """Why ``model=`` may not run (it reaches the agent's argv), or None. An unknown
        agent is left to the question's own validation, which names the known ones."""
        name = agent or self.settings.agents.agent
        if model is None or name not in AGENTS:
            return None
        try:
            check_model(name, model, self.settings.agents)
        except ModelRefused as exc:
            return str(exc)
        return None

    # -- after the acknowledgement: Slack calls -------------------------------------------

    def later(self, reply: Reply) -> Reply:
        """Post ``reply`` on the reply pool once Slack has the ack (bot/after_ack.py)."""
        if reply.origin is not None and reply.kind not in ("duplicate", "ignored", "malformed"):
            self.defer(self.reply, reply)
        return reply

    def defer(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """``fn(*args, **kwargs)`` on the reply pool, after the acknowledgement, in the
        context it was deferred from (the event's trace span, jobs/tracing.py)."""
        context = contextvars.copy_context()
        after_ack.defer(lambda: self.replies.submit(context.run, self._logged, fn, *args, **kwargs))

    @staticmethod
    def _logged(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:  # after the ack nobody else would see it
            log.exception("%s after the acknowledgement failed", getattr(fn, "__name__", fn))

    def reply(self, reply: Reply) -> None:
        origin = reply.origin
        assert origin is not None and origin.channel and origin.thread_ts
        from bot import picker  # the picker's blocks; imported here: picker imports this module

        if reply.kind == "queued":
            # Test-only: the bot dies after the ack, before any post; its worker posts the status.
            crash_point(self.settings.jobs.test_crash_at, "before-reply")
            self._status_message(origin, reply.job_id or "", reply.text)
        elif reply.kind == "pick":
            self.call(
                "chat_postEphemeral",
                channel=origin.channel,
                user=origin.user,
                thread_ts=origin.thread_ts,
                text=reply.text,
                blocks=picker.blocks(reply.text, reply.pick or "", reply.choices),
            )
        elif reply.private:
            self.call(
                "chat_postEphemeral",
                channel=origin.channel,
                user=origin.user,
                thread_ts=origin.thread_ts,
                text=reply.text,
            )
        else:
            self._post(origin.channel, origin.thread_ts, reply.text)
            if reply.react:
                self._react(origin.channel, origin.message_ts, reply.react)

    def _status_message(self, origin: Origin, job_id: str, text: str) -> None:
        """The eyes reaction and the question's status message, unless a worker posted it
        (it started before this reply ran), or the final took the claim (it ended first)."""
        assert origin.channel and origin.thread_ts
        token = status_owner.take(self.redis, job_id, self.settings.jobs.pending_claim_ttl)
        if token is None:
            return  # the worker's (it started first), or the question ended already: no reaction either
        self._react(origin.channel, origin.message_ts, "eyes")
        ts = self._post(
            origin.channel, origin.thread_ts, text, blocks=status_blocks(f":eyes: {text}", job_id), job_id=job_id
        )
        if ts:
            status_owner.posted(self.redis, job_id, ts)
        else:
            status_owner.give_back(self.redis, job_id, token)

    # -- Slack calls: an error here must not lose the question ----------------------------

    def _post(
        self, channel: str, thread_ts: str, text: str, blocks: list | None = None, job_id: str | None = None
    ) -> str | None:
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
        except Exception as exc:  # noqa: BLE001 - after the ack: logged, the worker posts the status
            if not ambiguous(exc):
                log.warning(
                    "slack chat_postMessage failed: %s",
                    exc.response.get("error") if isinstance(exc, SlackApiError) else exc,
                )
                return None
            log.warning("slack chat_postMessage got no answer (%s); not posting it again", exc)
        if job_id is None:
            return None
        try:
            found = status_in_thread(
                thread_messages(replies_page(self.client.conversations_replies, channel, thread_ts)), job_id
            )
        except Exception as exc:  # noqa: BLE001 - then the worker looks again before posting its own
            log.warning("could not look for the status message of %s in the thread: %s", job_id, exc)
            return None
        return found

    def _react(self, channel: str, ts: str | None, name: str) -> None:
        if ts:
            self.call("reactions_add", channel=channel, timestamp=ts, name=name)

    def call(self, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(**kwargs)
        except SlackApiError as exc:
            log.warning("slack %s failed: %s", method, exc.response.get("error"))
            return None


def refused(repo: str | None, repos: dict[str, Any]) -> bool:
    """``repo`` (None: none named, no default) may not be asked about where ``repos`` are open."""
    return repo not in repos if repo is not None else not repos


def refusal(repo: str | None, repos: dict[str, Any]) -> str:
    """The asker's (ephemeral) line when a repository may not be asked about here."""
    known = ", ".join(f"`{name}`" for name in sorted(repos))
    text = f"Repositories you may ask about here: {known}." if known else "No repository is open here."
    return f"I can't answer about the repository `{repo}` here. {text}" if repo is not None else text
