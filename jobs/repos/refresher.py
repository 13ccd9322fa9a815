"""The worker's background refresher: remotes fetched on schedule, idle snapshots removed.

A daemon thread of the worker's main process (its work-horses are forks: jobs/repos/locks.py
keeps the locks it holds out of them). Questions fetch on demand too, when a mirror is
older than ``ASKBOX_REPO_REFRESH``; the refresher keeps that the exception, so a question
rarely waits for a fetch. Every worker on a host runs one; the mirror's lock makes their
fetches one.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from jobs.repos.resolve import RepoRef
from jobs.repos.workspace import refresh_all

log = logging.getLogger(__name__)


def start_refresher(
    repos: list[RepoRef], mirrors: Path, snapshots: Path, every: float, idle: float, fetch_timeout: float
) -> threading.Thread:
    def loop() -> None:
        while True:
            try:
                # A bit under `every`: the round after this one finds the mirror due, not just short of it.
                refresh_all(repos, mirrors, snapshots, refresh=every * 0.9, idle=idle, fetch_timeout=fetch_timeout)
            except Exception:
                log.exception("repository refresh failed")
            stop.wait(every)

    stop = threading.Event()
    thread = threading.Thread(target=loop, name="askbox-repo-refresher", daemon=True)
    thread.start()
    return thread
