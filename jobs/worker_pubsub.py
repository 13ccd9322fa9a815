"""An RQ worker that leaves its command channel at once when it stops.

Every RQ worker listens for commands (shutdown, stop or kill a job) on a pub/sub thread
whose read blocks up to 60 s. RQ 3.0's ``unsubscribe`` sends UNSUBSCRIBE, then calls the
thread's ``stop()``: Redis's reply wakes the read, and the thread is meant to see the stop
and end. But the reply can be read *before* ``stop()`` clears the thread's flag; the thread
then goes back into a 60 s read, and redis-py 8's ``stop()`` waits for the thread without
bound, so the worker's exit hangs for 60 s (seen in the tests whenever the machine was
busy; in compose it turns a clean stop into a kill after the grace period). Clearing the
flag first, then unsubscribing, leaves the thread nothing to go back to. Written here
because neither library does it in the versions askbox runs (rq 3.0, redis 8.2).
"""

from __future__ import annotations

from rq.worker import BaseWorker


class PromptUnsubscribe(BaseWorker):
    """Mixed in before RQ's worker class: ``class W(PromptUnsubscribe, Worker)``."""

    def unsubscribe(self) -> None:
        thread = self.pubsub_thread
        if thread is None:
            return
        self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
        thread.stop(timeout=0)  # clears the run flag; the join is below, bounded
        if self.pubsub is not None:
            self.pubsub.unsubscribe()  # Redis's reply wakes the read, and the loop ends
        thread.join(timeout=1)
