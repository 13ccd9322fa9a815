"""Every Redis key askbox writes (besides RQ's own), with its TTL, on one screen.

The invariants that make "one question, one job, one final message" live here:

- ``event_claim``: the bot handles a Slack message (team, channel, ts) once, however
  often Slack delivers it (retries, ``app_mention`` plus ``message.*``, several bots);
- ``question_claim``: exactly one process creates the RQ job of a question id;
- ``final_outbox``: a question's final message, written before it is delivered, with
  what of it was delivered (jobs/outbox.py); ``final_lease`` is held, briefly, by the
  one process delivering it.

``event_claim`` and ``question_claim`` are *pending* (a token, ``PENDING_CLAIM_TTL``)
until the work they guard is done, then long (``CLAIM_TTL``); see jobs/claims.py.
Everything else is state: the cancel request a running job polls, the threads the bot was mentioned in, conversation memory,
the answer cache, feedback votes, the shared Slack rate budget, the model gateway's
per-question tokens and usage.
"""

from __future__ import annotations

import datetime as dt
import hashlib

PREFIX = "askbox:"
DAY = 24 * 3600
# Claims, RQ results and the bot's thread marks outlive any retry or redelivery Slack
# makes (hours) by a wide margin: a week.
CLAIM_TTL = 7 * DAY
# A claim whose process may still die before its work is done (jobs/claims.py): short, so
# Slack's redelivery (about 1 and 5 minutes after the first) finds it lapsed. The default;
# ASKBOX_PENDING_CLAIM_TTL overrides it.
PENDING_CLAIM_TTL = 60
# A final delivery in progress, renewed by the process delivering it; a delivery cut off
# (its process died) is taken over by another process once this lapses (jobs/outbox.py).
FINAL_LEASE_TTL = 60


# --- exactly once ------------------------------------------------------------------


def event_claim(team: str, channel: str, ts: str) -> str:
    return f"{PREFIX}event:{team}:{channel}:{ts}"


def question_claim(question_id: str) -> str:
    return f"{PREFIX}question:{question_id}"


def status_message(job_id: str) -> str:
    """(CLAIM_TTL) The question's status message: a pending token while the bot (after its
    ack) or the worker (when the bot did not) posts it, then its ts. One owner, so a bot
    and a worker racing never leave two (jobs/slack/status_owner.py)."""
    return f"{PREFIX}status:{job_id}"


def final_outbox(job_id: str) -> str:
    """Hash (CLAIM_TTL): ``final`` (the Final's JSON), ``state`` (pending, delivered,
    abandoned), ``attempts``, and ``part:<name>`` (the ts of each Slack message of it
    posted) — jobs/outbox.py. The old final claim's name: a string there (written before
    the outbox) counts as written."""
    return f"{PREFIX}final:{job_id}"


def final_lease(job_id: str) -> str:
    return f"{PREFIX}final-lease:{job_id}"


def answer_streams(job_id: str) -> str:
    """List (DAY): the ts of every answer stream any run of the question started, so a
    run answering after another died removes that one's unfinished drafts."""
    return f"{PREFIX}streams:{job_id}"


FINAL_OUTBOX_PENDING = f"{PREFIX}final-outboxes"  # zset: job id -> when outboxed


# --- a question's life ---------------------------------------------------------------


def progress_shown(job_id: str) -> str:
    """(CLAIM_TTL) Set once a tool step or answer text of the question was shown: from
    then on RQ does not retry it (a second run would show its progress again under the
    first's); a timeout or a dead work-horse ends it with one message (jobs/job.py)."""
    return f"{PREFIX}shown:{job_id}"


def cancel_request(job_id: str) -> str:
    """Who asked to cancel (the value); the running job polls it."""
    return f"{PREFIX}cancel:{job_id}"


def mentioned_thread(team: str, channel: str, thread_ts: str) -> str:
    """Set once the bot was mentioned in a thread: replies there are follow-ups. The value
    is the thread's first asker's Slack user id ("1": marked before askers were kept)."""
    return f"{PREFIX}slack-thread:{team}:{channel}:{thread_ts}"


def thread_question(team: str, channel: str, thread_ts: str) -> str:
    """(CLAIM_TTL) The job id of the thread's latest question: what Slack's stop button
    (``agent_session_stopped``, which names only the thread) stops."""
    return f"{PREFIX}thread-question:{team}:{channel}:{thread_ts}"


def user_questions(team: str, user: str) -> str:
    """List (CLAIM_TTL, the newest first, at most ``RECENT_QUESTIONS``): a user's question
    job ids, for their App Home."""
    return f"{PREFIX}user-questions:{team}:{user}"


RECENT_QUESTIONS = 20


def repo_pick(token: str) -> str:
    """(DAY) A question that named no repository where several are open, waiting for its
    asker to pick one (bot/picker.py): the question's JSON."""
    return f"{PREFIX}repo-pick:{token}"


# --- conversations and answers -------------------------------------------------------

MEMORY_TTL = CLAIM_TTL  # the default; ASKBOX_MEMORY_TTL overrides it
CACHE_TTL = 30 * DAY  # the default; ASKBOX_CACHE_TTL overrides it


def memory_turns(conversation: str) -> str:
    return f"{PREFIX}memory:{conversation}:turns"


def memory_summary(conversation: str) -> str:
    return f"{PREFIX}memory:{conversation}:summary"


def cached_answer(digest: str) -> str:
    return f"{PREFIX}cache:{digest}"


def tree_index(snapshot: str) -> str:
    """(a day, renewed on use; jobs/tree_index.py) A snapshot's files and definitions,
    compressed, for citations; ``snapshot`` is ``<repo slug>/<commit>-<variant>``. Its
    ``:build`` lock is held while one process builds it."""
    return f"{PREFIX}tree-index:{hashlib.sha256(snapshot.encode()).hexdigest()[:32]}"


# --- feedback and budgets --------------------------------------------------------------


def feedback_votes(job_id: str) -> str:
    """Hash: Slack user id -> "up" | "down" (one vote per person per answer)."""
    return f"{PREFIX}feedback:{job_id}"


FEEDBACK_COUNTS = f"{PREFIX}feedback:counts"  # hash: "up"/"down" -> count, for metrics

# zset: job id -> when its latest vote was cast (``askbox feedback export --since``).
FEEDBACK_INDEX = f"{PREFIX}feedback:index"
# hash: "verdict|repo|model" -> votes, for ``askbox_answer_feedback_total`` (jobs/feedback.py).
FEEDBACK_LABELS = f"{PREFIX}feedback:labels"


def feedback_answer(job_id: str) -> str:
    """Hash (CLAIM_TTL): what a vote was about, kept when the first vote on the answer is
    cast: question, answer, repo, agent, model, commit (jobs/feedback.py)."""
    return f"{PREFIX}feedback-answer:{job_id}"


SLACK_BUDGET_PREFIX = f"{PREFIX}slack-budget"  # jobs/slack budget windows and penalties
# Set (NX, with a TTL) while Gemini side tasks are being skipped: one log line per outage.
SIDE_TASK_OUTAGE = f"{PREFIX}side-tasks:outage"


# --- the model gateway (gateway/) ----------------------------------------------------
#
# Real API keys never appear in Redis: keys are named by ``key_id``; per-question tokens
# are stored hashed, so a Redis dump hands out no live credential.

GATEWAY_PREFIX = f"{PREFIX}gateway:"
GATEWAY_LIMITS_PREFIX = GATEWAY_PREFIX + "limits"  # the ``limits`` library's own keys
DAILY_TTL = 8 * DAY  # daily usage totals are kept a week, for reports


def key_id(api_key: str) -> str:
    """A stable, non-secret name for an API key (logs, metrics, Redis)."""
    return "k" + hashlib.sha256(api_key.encode()).hexdigest()[:10]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def gateway_token(hashed: str) -> str:
    """A session's record, under its token's ``token_hash``."""
    return f"{GATEWAY_PREFIX}token:{hashed}"


def gateway_session(session_id: str) -> str:
    return f"{GATEWAY_PREFIX}session:{session_id}"


def session_usage(session_id: str) -> str:
    """Hash: a session's tokens, requests, cost, 429s absorbed and ``stop_reason``."""
    return f"{GATEWAY_PREFIX}usage:{session_id}"


def utc_date(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d")


def daily_usage(kind: str, name: str, date: str | None = None) -> str:
    """Hash: today's totals of one user or channel (``kind`` is "user" or "channel")."""
    return f"{GATEWAY_PREFIX}daily:{date or utc_date()}:{kind}:{name}"


def budget_reserved(scope: str, name: str, date: str) -> str:
    """Hash: the spend reserved by requests in flight against one budget (``scope`` "user"
    or "channel" for ``date``, or "question" for a session), one field per request."""
    if scope == "question":
        return f"{GATEWAY_PREFIX}reserved:question:{name}"
    return f"{GATEWAY_PREFIX}reserved:{date}:{scope}:{name}"


def key_cooldown(kid: str) -> str:
    """Set while an API key waits out an upstream 429's retryDelay."""
    return f"{GATEWAY_PREFIX}cooldown:{kid}"


def key_day_quota(kid: str) -> str:
    """Set while an API key's per-day quota is used up."""
    return f"{GATEWAY_PREFIX}dayquota:{kid}"


def breaker(name: str) -> str:
    """Hash: the shared circuit breaker's state for one upstream."""
    return f"{GATEWAY_PREFIX}breaker:{name}"


def breaker_trial(name: str) -> str:
    """Held (SET NX) by the one trial request of a half-open breaker."""
    return f"{GATEWAY_PREFIX}breaker:{name}:trial"
