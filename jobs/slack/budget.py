"""One Slack rate budget per workspace, shared by every process through Redis.

Slack limits each app per workspace per method ("tiers"), whichever process calls.
Workers answer questions in parallel, so each worker counting on its own would exceed
the limit as soon as two run. Every call is admitted here first: a sliding window per
(team, method) (and per channel for chat.postMessage), kept as a Redis sorted set and
checked and updated atomically in Lua, timed by Redis's own clock so hosts with skewed
clocks agree.

``try_acquire`` never waits: progress updates use it and, when refused, coalesce into
the next attempt. ``acquire`` waits (final answers must go out). After a 429,
``penalize`` closes the method for ``Retry-After`` seconds for every process.
``SharedRateLimitHandler`` (slack_sdk's ``RateLimitErrorRetryHandler``, which sleeps
``Retry-After`` and retries) does that from inside the client, and can be told per call
not to retry (``rate_limit_scope``) so a stale progress update is dropped, not resent.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from redis import Redis
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from jobs import keys

log = logging.getLogger(__name__)

# Calls per minute per method per workspace, Slack's documented tiers ("20+" etc.; the
# "+" is headroom we do not use).
TIER_PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}

# The tiers of the methods askbox calls, from Slack's method descriptions
# (../shared/fixtures/slack-api/methods/*.json, "rate_limits", from slack-ruby/slack-api-ref).
# Two are "Special" there ("t5"): chat.postMessage (see POST_MESSAGE_PER_CHANNEL) and
# assistant.threads.setStatus, which has no published number and is budgeted as Tier 3.
METHOD_TIERS: dict[str, int] = {
    "chat.startStream": 2,
    "chat.stopStream": 2,
    "reactions.remove": 2,
    "chat.update": 3,
    "chat.delete": 3,
    "reactions.add": 3,
    "conversations.replies": 3,
    "apps.connections.open": 3,
    "assistant.threads.setStatus": 3,
    "chat.appendStream": 4,
    "chat.postEphemeral": 4,
    "files.getUploadURLExternal": 4,
    "files.completeUploadExternal": 4,
    "users.info": 4,
    "agents.sessions.setStatus": 3,
    "agents.sessions.rename": 3,
    "assistant.threads.setSuggestedPrompts": 4,
    "views.open": 4,
    "views.publish": 4,
}
DEFAULT_TIER = 3  # a method missing above: assume the common middle tier
# chat.postMessage: "1 message per second per channel, short bursts allowed".
POST_MESSAGE_PER_CHANNEL = (1, 1.0)

Rule = tuple[int, float]  # (calls, per seconds)

# KEYS: penalty keys (ARGV[2] of them), then window keys; ARGV[1]: a unique member,
# ARGV[3..]: (limit, window ms) per window key. Returns 0 when admitted, else the
# milliseconds until it could be (a hint for waiting callers).
_ACQUIRE = """
local penalties = tonumber(ARGV[2])
local wait = 0
for i = 1, penalties do
  local pttl = redis.call('PTTL', KEYS[i])
  if pttl > wait then wait = pttl end
end
if wait > 0 then return wait end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = penalties + 1, #KEYS do
  local n = i - penalties
  local limit = tonumber(ARGV[1 + 2 * n])
  local window = tonumber(ARGV[2 + 2 * n])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[i])
  if count >= limit then
    local idx = count - limit
    local entry = redis.call('ZRANGE', KEYS[i], idx, idx, 'WITHSCORES')
    local w = tonumber(entry[2]) + window - now
    if w < 1 then w = 1 end
    if w > wait then wait = w end
  end
end
if wait > 0 then return wait end
for i = penalties + 1, #KEYS do
  local n = i - penalties
  redis.call('ZADD', KEYS[i], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2 + 2 * n]))
end
return 0
"""


class SlackBudget:
    """Admission to Slack's rate limits for one workspace (``team_id``), across processes.

    ``overrides`` replaces the rule of a method (``{"chat.update": (5, 60.0)}``), for
    tests and for workspaces with known different limits.
    """

    def __init__(
        self,
        redis: Redis,
        team_id: str,
        *,
        overrides: dict[str, Rule] | None = None,
        prefix: str = keys.SLACK_BUDGET_PREFIX,
    ) -> None:
        self.redis = redis
        self.team_id = team_id or "-"
        self.overrides = dict(overrides or {})
        self.prefix = f"{prefix}:{self.team_id}"
        self._script = redis.register_script(_ACQUIRE)

    # -- rules --------------------------------------------------------------------------

    def rules(self, method: str, channel: str | None = None) -> list[tuple[str, int, float]]:
        """(Redis key, calls, per seconds) windows that one call of ``method`` counts against."""
        if method in self.overrides:
            calls, seconds = self.overrides[method]
            key = f"{self.prefix}:{method}" + (f":{channel}" if channel and method == "chat.postMessage" else "")
            return [(key, calls, seconds)]
        if method == "chat.postMessage":
            calls, seconds = POST_MESSAGE_PER_CHANNEL
            return [(f"{self.prefix}:{method}:{channel or '-'}", calls, seconds)]
        tier = METHOD_TIERS.get(method, DEFAULT_TIER)
        return [(f"{self.prefix}:{method}", TIER_PER_MINUTE[tier], 60.0)]

    def _penalty_keys(self, method: str, channel: str | None) -> list[str]:
        penalties = [f"{self.prefix}:{method}:penalty"]
        if channel:
            penalties.append(f"{self.prefix}:{method}:{channel}:penalty")
        return penalties

    # -- admission ----------------------------------------------------------------------

    def _attempt(self, method: str, channel: str | None, headroom: float) -> float:
        """0.0 when admitted, else seconds until it might be."""
        penalties = self._penalty_keys(method, channel)
        rules = self.rules(method, channel)
        args: list[Any] = [uuid.uuid4().hex, len(penalties)]
        for _, calls, seconds in rules:
            # Headroom: low-priority callers leave part of each window to the ones that wait.
            args += [max(1, int(calls * (1.0 - headroom))), int(seconds * 1000)]
        wait_ms = self._script(keys=penalties + [key for key, _, _ in rules], args=args)
        return int(wait_ms) / 1000.0

    def try_acquire(self, method: str, channel: str | None = None, *, headroom: float = 0.0) -> bool:
        """Take one call of ``method`` if the window allows it now; never waits.

        ``headroom`` (0..1) is the share of the window this caller must leave unused:
        progress updates pass e.g. 0.2 so final answers always find room."""
        return self._attempt(method, channel, headroom) == 0.0

    def acquire(self, method: str, channel: str | None = None, timeout: float = 30.0) -> bool:
        """Take one call of ``method``, waiting up to ``timeout`` seconds; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            wait = self._attempt(method, channel, 0.0)
            if wait == 0.0:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(wait, left, 5.0))

    def penalize(self, method: str, retry_after: float, channel: str | None = None) -> None:
        """Slack answered 429: no process calls ``method`` for ``retry_after`` seconds."""
        ms = max(1, int(retry_after * 1000))
        key = self._penalty_keys(method, channel)[-1]
        # Only ever lengthen a penalty: a short Retry-After must not cut a longer one.
        if self.redis.pttl(key) < ms:
            self.redis.set(key, "1", px=ms)
        log.info("slack %s rate limited in %s: pausing %.1f s", method, self.team_id, retry_after)

    def used(self, method: str, channel: str | None = None) -> int:
        """Calls counted in the current window of ``method`` (for tests and metrics)."""
        key, _, seconds = self.rules(method, channel)[0]
        now_s, now_us = self.redis.time()
        now_ms = now_s * 1000 + now_us // 1000
        return int(self.redis.zcount(key, now_ms - int(seconds * 1000) + 1, "+inf"))


# --------------------------------------------------------------------------- 429 handling


class _Scope(threading.local):
    budget: SlackBudget | None = None
    retry: bool = True


_scope = _Scope()


@contextlib.contextmanager
def rate_limit_scope(budget: SlackBudget | None, *, retry: bool = True) -> Iterator[None]:
    """Calls made by this thread inside the block report 429s to ``budget``; with
    ``retry=False`` a 429 is raised at once instead of slept through and retried."""
    saved = (_scope.budget, _scope.retry)
    _scope.budget, _scope.retry = budget, retry
    try:
        yield
    finally:
        _scope.budget, _scope.retry = saved


def retry_after_seconds(headers: dict[str, Any] | None) -> float:
    for key, value in (headers or {}).items():
        if key.lower() == "retry-after":
            value = value[0] if isinstance(value, list) else value
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                break
    return 1.0  # Slack always sends it; one second if it ever does not


def method_of(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


class SharedRateLimitHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler (sleep ``Retry-After``, retry) that also tells every
    process through the budget of the current ``rate_limit_scope``, and retries only
    where the scope allows."""

    def can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is not None and response.status_code == 429:
            budget = _scope.budget
            if budget is not None:
                budget.penalize(method_of(request.url), retry_after_seconds(response.headers))
            if not _scope.retry:
                return False
        return super().can_retry(state=state, request=request, response=response, error=error)
