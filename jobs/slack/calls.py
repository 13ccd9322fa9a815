"""Web API calls within the team's shared rate budget (jobs/slack/budget.py).

Two kinds of call: progress never waits (refused by the budget, it is dropped and the
next tick sends a newer state), the final message waits for the budget and for Slack.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web.slack_response import SlackResponse

from jobs.slack.budget import SlackBudget, rate_limit_scope, retry_after_seconds
from jobs.slack.options import SlackOptions
from jobs.slack.web_api import http_status

log = logging.getLogger(__name__)

# files_upload_v2 makes these two calls (plus an upload to the URL, which is not rate limited).
UPLOAD_METHODS = ("files.getUploadURLExternal", "files.completeUploadExternal")


class SlackCalls:
    """One question's calls to Slack, each admitted by the team's budget first."""

    def __init__(self, client: WebClient, budget: SlackBudget, options: SlackOptions, job_id: str) -> None:
        self.client = client
        self.budget = budget
        self.options = options
        self.job_id = job_id  # for the logs

    def attempt(self, method: str, **args: Any) -> SlackResponse | None:
        """A progress call: None at once when the budget says no."""
        return self.call(method, wait=False, **args)

    def call(self, method: str, *, wait: bool, **args: Any) -> SlackResponse | None:
        """Call ``method`` within the team's budget.

        ``wait=False`` (progress): None at once when the budget says no, and a 429 is
        raised, not retried (the next tick sends a newer state anyway). ``wait=True``
        (final messages): waits for the budget up to ``final_wait`` and then goes anyway,
        with the client sleeping through 429s as Slack asks."""
        channel = args.get("channel") if method == "chat.postMessage" else None
        if wait:
            if not self.budget.acquire(method, channel, timeout=self.options.final_wait):
                log.warning(
                    "job %s: %s waited %.0f s for the rate budget; sending anyway",
                    self.job_id,
                    method,
                    self.options.final_wait,
                )
        elif not self.budget.try_acquire(method, channel, headroom=self.options.progress_headroom):
            return None
        args = {k: v for k, v in args.items() if v is not None}
        with rate_limit_scope(self.budget, retry=wait):
            try:
                return getattr(self.client, method.replace(".", "_"))(**args)
            except SlackApiError as exc:
                if http_status(exc) == 429:
                    self.budget.penalize(method, retry_after_seconds(dict(exc.response.headers or {})), channel)
                raise

    def upload(self, **args: Any) -> None:
        """``files_upload_v2`` as a final call: waits for the budget of both its methods."""
        for method in UPLOAD_METHODS:
            self.budget.acquire(method, timeout=self.options.final_wait)
        with rate_limit_scope(self.budget, retry=True):
            self.client.files_upload_v2(**args)
