"""One question's pipeline, the same for every entry point: the worker's job
(jobs/job.py), ``askbox ask --inline`` and ``askbox eval`` (the queue's, or ``--inline``).

The stages, in order (jobs/pipeline/stages.py and agent.py)::

    authorize and resolve -> pin -> recall the thread -> triage -> cache -> budget -> run the agent
      -> an answer: remember -> store in the cache -> summarise and cite -> finalize
      -> no answer: the failure's final (timeout, cancelled, ...)         -> finalize

Only the ``Run`` differs between entry points: its id, its ``Destination`` (the job's
meta and Slack thread, the terminal, an eval record) and whether a directory may be named.
A stage that ends the question early raises ``Ended``; every question, however it ends,
goes through ``finalize`` once, while the snapshot it was answered from is still leased.
"""

from __future__ import annotations

from jobs.final import Final
from jobs.pipeline import stages
from jobs.pipeline.agent import run_agent
from jobs.pipeline.run import Destination, Ended, InfraFault, Run
from sandbox.agents.events import Result

__all__ = ["Destination", "InfraFault", "Run", "answer"]


def answer(run: Run) -> Final:
    """Run the question's stages; its final, delivered to the run's destination."""
    with run.held:
        try:
            final = _stages(run)
        except Ended as ended:
            final = ended.final
        return stages.finalize(run, final)


def _stages(run: Run) -> Final:
    target = stages.authorize(run)
    pinned = stages.pin(run, target)
    run.destination.pinned(pinned.common)
    thread = stages.recall(run, pinned)
    stages.triage(run, pinned, thread)
    cache = stages.cached(run, pinned, thread)
    meta = stages.budget(run, pinned)
    outcome = run_agent(run, pinned, thread, meta)
    if not isinstance(outcome.terminal, Result):
        return stages.failed(run, pinned, outcome)
    text = run.redact(outcome.terminal.text)
    stages.remember(run, thread, text)
    stages.store(run, pinned, cache, text)
    return stages.answered(run, pinned, thread, outcome, text)
