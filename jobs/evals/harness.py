"""``askbox eval``'s engine: each question through the real pipeline, then (with a judge
and a reference) scored; one ``Record`` each.

Through the queue (the default) a question is enqueued like ``askbox ask``'s and its
final read from its job, so workers, their limits and their settings answer it; with
``inline`` this process runs the same pipeline (jobs/pipeline/) itself, an eval record
as the destination. ``concurrency`` questions are in flight at once. Every question is
asked ``fresh`` (an answer from the cache would measure nothing) in a conversation of its
own (no question sees another's turns). A question that fails is a record of its kind;
one that cannot be asked at all (a bug, Redis gone) is a record of kind ``error``: the
others still run. ``stop()`` (Ctrl-C) cancels what is in flight and runs nothing more.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from redis import Redis

from gateway.client import SessionMeta
from jobs import keys
from jobs.cancel import cancel
from jobs.evals.judge import Judge
from jobs.evals.questions import EvalQuestion
from jobs.evals.report import Record, Scored
from jobs.final import Final
from jobs.pipeline import Destination, Run, answer
from jobs.question import Origin, Question
from jobs.queue import QueueFull, enqueue, fetch
from jobs.settings import Settings
from sandbox.agents.events import AgentEvent, ToolStarted
from sandbox.agents.settings import AgentName

log = logging.getLogger(__name__)

POLL = 0.1  # seconds between looks at a queued question's job (its time is the worker's, not this)
QUEUE_FULL_WAIT = 1.0  # a full queue is asked again after this


@dataclass(frozen=True)
class Options:
    repo: str | None = None  # a line's own "repo" comes first
    agent: AgentName | None = None
    model: str | None = None
    judge: str | None = None  # the judge's model (on ASKBOX_SIDE_PROVIDER); None: no scores
    concurrency: int = 1
    inline: bool = False
    user: str = "eval"  # who asks: the per-user limits and budgets apply


class EvalRecord(Destination):
    """An inline run's destination: its steps (for a timeout's message) and its final."""

    def __init__(self) -> None:
        self.started_at = time.monotonic()
        self.lines: list[str] = []
        self.result: Final | None = None

    def event(self, event: AgentEvent) -> None:
        if isinstance(event, ToolStarted):
            self.lines.append(f"[{time.monotonic() - self.started_at:6.1f}s] {event.summary}")

    def steps(self) -> list[str]:
        return self.lines

    def final(self, final: Final) -> None:
        self.result = final


class Harness:
    def __init__(
        self, settings: Settings, redis: Redis, options: Options, on_record: Callable[[Record], None] | None = None
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.options = options
        self.on_record = on_record
        self.tag = f"eval-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
        self.judge = (
            Judge(options.judge, settings.gemini, settings.gateway.gateway_socket_dir, redis) if options.judge else None
        )
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()

    def run(self, questions: Sequence[EvalQuestion]) -> list[Record]:
        """The records of the questions asked, in the file's order. Ctrl-C (or SIGTERM,
        bot/cli/signals.py) stops the run: what is in flight is cancelled and ends with
        its final, nothing more is asked (``stopped``)."""
        pool = ThreadPoolExecutor(max_workers=max(1, self.options.concurrency), thread_name_prefix="eval")
        futures = [pool.submit(self.one, q) for q in questions]
        try:
            for future in as_completed(futures):
                if self.on_record is not None:
                    self.on_record(future.result())
        except KeyboardInterrupt:
            self.stop()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return sorted((f.result() for f in futures if f.done() and not f.cancelled()), key=lambda r: r.line)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask nothing more; cancel what runs (its final then says so)."""
        self._stop.set()
        with self._lock:
            running = list(self._in_flight)
        for run_id in running:
            if self.options.inline:  # the run's own watcher reads the key (jobs/pipeline/agent.py)
                self.redis.set(keys.cancel_request(run_id), self.options.user, ex=keys.CLAIM_TTL, nx=True)
            else:
                cancel(self.redis, run_id, by=self.options.user, slack=self.settings.slack)

    def one(self, item: EvalQuestion) -> Record:
        """One question, asked, answered (or not) and judged."""
        run_id = f"{self.tag}-{item.line}"
        base: dict[str, Any] = {
            "line": item.line,
            "question": item.question,
            "reference": item.reference,
            "repo": item.repo or self.options.repo,
            "verdict": item.verdict,
            "previous": item.previous,
            "run_id": run_id,
        }
        if self._stop.is_set():
            return Record(**base, outcome="cancelled", answer="Not asked: the evaluation was stopped.")
        question = Question(
            origin=Origin(kind="terminal", user=self.options.user, session=run_id),
            text=item.question,
            repo=base["repo"],
            agent=self.options.agent,
            model=self.options.model,
            fresh=True,
            id=run_id,
        )
        with self._lock:
            self._in_flight.add(run_id)
        try:
            final, seconds, waited = self._inline(question) if self.options.inline else self._queued(question)
        except Exception as exc:
            log.exception("eval: question on line %d failed", item.line)
            return Record(**base, outcome="error", answer=f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._in_flight.discard(run_id)
        record = Record(
            **{**base, "repo": final.repo or base["repo"]},
            outcome=final.kind,
            answer=final.text,
            seconds=seconds,
            waited=waited,
            commit=final.commit,
            agent=final.agent,
            model=final.model,
            cached=final.cached,
            tokens=final.tokens,
            cost_usd=final.cost_usd,
            references=final.references,
            linked=final.verified if final.references is not None else None,
        )
        return self._judged(record)

    def _inline(self, question: Question) -> tuple[Final, float, float | None]:
        destination = EvalRecord()
        run = Run(
            question,
            self.settings,
            self.redis,
            destination,
            run_id=question.id,
            allow_paths=True,  # the operator's own process, as `askbox ask --inline`
            labels={"job": question.id, "user": question.origin.user},
            one_off=True,
        )
        started = time.monotonic()
        final = answer(run)
        return final, round(time.monotonic() - started, 3), None

    def _queued(self, question: Question) -> tuple[Final, float, float | None]:
        submitted = time.time()
        while True:
            try:
                job = enqueue(self.redis, question, self.settings.jobs).job
                break
            except QueueFull:  # the asker's own questions, or everyone's: wait for room
                if self._stop.is_set():
                    return Final(kind="cancelled", text="Not asked: the evaluation was stopped."), 0.0, None
                time.sleep(QUEUE_FULL_WAIT)
        while not (meta := job.get_meta(refresh=True)).get("final"):
            time.sleep(POLL)
        final = Final.model_validate(meta["final"])
        done = float(meta.get("final_at") or time.time())  # the worker's clock: as exact as the poll is not
        started = fetch(self.redis, job.id).started_at
        waited = round(max(0.0, started.timestamp() - submitted), 3) if started else None
        return final, round(max(0.0, done - submitted), 3), waited

    def _judged(self, record: Record) -> Record:
        if self.judge is None:
            return record
        if not record.answered:
            return record.model_copy(update={"judge_note": "not answered"})
        if not record.reference:
            return record.model_copy(update={"judge_note": "no reference answer"})
        meta = SessionMeta(
            job_id=record.run_id,
            user=self.options.user,
            repo=record.repo,
            model=self.judge.model,
            budget_exempt=self.options.user in self.settings.jobs.admins,
        )
        judgement = self.judge.judge(meta, record.question, record.reference, record.answer)
        update: dict[str, Any] = {"judge_tokens": judgement.tokens, "judge_cost_usd": judgement.cost_usd}
        if judgement.scores is None:
            update["judge_note"] = judgement.error
        else:
            update["judged"] = Scored(
                scores=judgement.scores, overall=judgement.overall or 0.0, rationale=judgement.rationale
            )
        return record.model_copy(update=update)
