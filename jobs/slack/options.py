"""Timings and sizes of a question's Slack thread: how often progress may be sent, when a
stream rolls over, where an answer is split. Not settings: the defaults suit Slack."""

from __future__ import annotations

from pydantic import BaseModel

from jobs.slack.mrkdwn import FILE_THRESHOLD, PART_LIMIT, SECTION_LIMIT


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
