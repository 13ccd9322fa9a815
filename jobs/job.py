"""The job: one question, answered by one agent in one sandbox, ending in one final message.

The work-horse running it is a fork of the worker, which loaded the settings tree once at
start and handed it here (``use_settings``).
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack
from typing import Any

from redis import Redis
from rq import get_current_job
from rq.job import Job

from jobs import access, keys, metrics, outbox
from jobs.agent_runs import agent_session, model_route, mount_repo, pin_repo
from jobs.cache import AnswerCache
from jobs.citations import cite
from jobs.crash_points import crash_point
from jobs.final import Final
from jobs.side_tasks.side_call import GeminiCalls
from jobs.side_tasks.compaction import remember
from jobs.side_tasks.summary import summarise
from jobs.side_tasks.triage import triage, with_note
from gateway.client import (
    GatewaySession,
    GatewayUnavailable,
    SessionMeta,
    check_budget,
    session_state,
    upstream_paused,
)
from jobs.logs import log_context
from jobs.memory import ThreadMemory
from jobs.prompt import Turn, build_prompt, setting_for
from jobs.destinations import publisher_for
from jobs.question import Question
from jobs.redaction import EventRedactor, Redactor
from jobs.repos import Pin, RepoUnavailable, UnknownRepo, Workspace, resolve_repo
from jobs.settings import Settings
from jobs.slack import agent_session as slack_session
from jobs.tree_index import lazy, shared_index
from jobs.web_host import BadTemplate, checkout_remote, web_host
from sandbox.agents.adapters import Agent, agent_for
from sandbox.agents.models import ModelRefused, check_model
from sandbox.agents.session import AgentSession, PromptTooLong
from sandbox.agents.events import AgentError, ErrorKind, Result

log = logging.getLogger(__name__)


class InfraFault(RuntimeError):
    """Raised only when nothing reached the user yet: RQ may retry the whole job."""


_settings: Settings | None = None


def use_settings(settings: Settings) -> None:
    """The worker's settings tree, for the jobs its work-horses run."""
    global _settings
    _settings = settings


def current_settings() -> Settings:
    """The tree the worker handed over; loaded here once only if a plain RQ worker runs us."""
    global _settings
    if _settings is None:
        _settings = Settings.load()
    return _settings


def answer_question(data: dict[str, Any]) -> dict[str, Any]:
    """The RQ entry point (JSON in, JSON out: workers use RQ's JSON serializer)."""
    job = get_current_job()
    assert job is not None, "answer_question runs inside an RQ job"
    question = Question.model_validate(data)
    if job.started_at and job.enqueued_at:
        metrics.QUEUE_WAIT.observe((job.started_at - job.enqueued_at).total_seconds())
    with log_context(job_id=job.id, repo=question.repo, user=question.origin.user, thread=question.thread_key):
        final = QuestionRun(question, job, current_settings()).run()
    return {"kind": final.kind, "duration": final.duration}


class QuestionRun:
    def __init__(self, question: Question, job: Job, settings: Settings) -> None:
        self.question = question
        self.job = job
        self.settings = settings
        self.redis: Redis = job.connection
        self.publisher = publisher_for(question, job, settings.slack)
        self.started = time.monotonic()
        # Every configured secret, in every form, is kept out of what this question shows.
        self.redact = Redactor(settings.secret_values())
        self._stop_reason: str | None = None  # why the gateway ended the run, if it did
        self._outage: str | None = None  # the model API is failing and every gateway paused it
        self._provider = "gemini"  # the agent's gateway provider
        # The repository as this question sees it: pinned to a commit when it starts, and
        # (once the agent runs) its snapshot, leased until the final message is posted.
        self.pin: Pin | None = None
        self.workspace: Workspace | None = None
        self._held = ExitStack()

    def run(self) -> Final:
        with self._held:
            # Slack's agent session: processing (and its stop button) from here; the final
            # message sets it active or closed, whoever delivers it (jobs/slack/agent_session.py).
            slack_session.start(self.question, self.job, self.settings.slack)
            return self._run()

    def _run(self) -> Final:
        q = self.question
        earlier = outbox.read(self.redis, self.job.id)
        if earlier is not None:
            # A run that wrote its final and died before delivering it (RQ retried the
            # abandoned job): finish that delivery, answer nothing again.
            outbox.publish(self.redis, self.job.id, earlier, self.publisher.write_final, self.publisher.deliver_final)
            return earlier
        who = self.redis.get(keys.cancel_request(self.job.id))
        if who is not None:
            return self._final(Final(kind="cancelled", text=f"Cancelled by {who.decode()} before it started."))
        jobs = self.settings.jobs
        # Only what this question's origin may see, checked again here since a job written
        # straight into Redis never met the bot: another name reads like an unknown one.
        repos = access.visible(jobs.repos, q.origin, jobs.repo_access, jobs.channel_repos)
        if jobs.repos and not repos and not (q.repo and ("/" in q.repo or q.repo.startswith(("~", ".")))):
            # (A path is left to resolve_repo, which says paths are not accepted here.)
            return self._final(Final(kind="rejected", text="No repository is open here."))
        try:
            repo = resolve_repo(q.repo, repos, allow_paths=jobs.allow_repo_paths and q.origin.kind == "terminal")
        except UnknownRepo as exc:
            return self._final(Final(kind="rejected", text=str(exc)))
        agent = agent_for(q.agent, self.settings.agents)
        self._provider = agent.provider or "gemini"  # whose breaker says the API is down
        try:  # the bot checked it too, but a job written straight into Redis never met the bot
            model = agent.model(check_model(agent.name, q.model, self.settings.agents))
        except ModelRefused as exc:
            return self._final(Final(kind="rejected", text=str(exc)))
        try:
            self.pin = pin = pin_repo(self.settings, repo)  # a stale mirror is fetched first
        except RepoUnavailable as exc:
            return self._final(Final(kind="rejected", text=str(exc), repo=repo.name))
        commit = pin.commit
        common = dict(repo=repo.name, commit=commit, agent=agent.name, model=model)
        self.job.meta["pin"] = common  # the status line's "On it: `web` at `a1b2c3d` with …" (jobs/slack/progress.py)
        memory = ThreadMemory(self.redis, jobs.memory_turns, jobs.memory_ttl)
        conversation = memory.load(q.thread_key)
        side = GeminiCalls(self.settings.gemini, self.settings.gateway.gateway_socket_dir, self.redis,
                           self._session_meta(repo.name, self.settings.gemini.gemini_model))
        if not q.force_agent and (reply := triage(side, q.text, conversation)) is not None:
            reply = self.redact(reply)  # small talk: no cache, no container
            remember(memory, q.thread_key, Turn(question=q.text, answer=reply), side, conversation.summary)
            return self._final(Final(kind="answer", text=with_note(reply), duration=self._elapsed(),
                                     repo=repo.name, model=side.model))
        # Only a thread's first question is answered from (or stored in) the cache: a
        # follow-up means something different after a different conversation.
        cache = (AnswerCache(self.redis, ttl=jobs.cache_ttl, scope=access.cache_scope(q.origin))
                 if not conversation.turns else None)
        if cache is not None and not q.fresh:
            hit = cache.get(repo.name, commit, agent.name, model, q.text)
            if hit is not None:
                remember(memory, q.thread_key, Turn(question=q.text, answer=hit.text), side, conversation.summary)
                text = f"{hit.text}\n\n_{hit.notice()}_"
                return self._final(Final(kind="answer", cached=True, duration=self._elapsed(),
                                         **self._cited(text, pin), **common))
        meta = self._session_meta(repo.name, model).model_copy(update={"provider": self._provider})
        if agent.gateway_fronted:
            refusal = check_budget(self.redis, self.settings.gateway, meta)
            if refusal is not None:  # before any container starts
                return self._final(Final(kind="rejected", text=refusal, **common))
            if self._upstream_down():  # every gateway has paused the API: no container for nothing
                return self._final(self._error_final(AgentError(kind=ErrorKind.INFRA, message="paused"), common))
        setting = setting_for(jobs, repo.name, commit, q.origin.channel, q.origin.kind)
        prompt = build_prompt(q.text, setting, conversation.turns, conversation.summary)
        try:
            self.workspace = self._held.enter_context(mount_repo(self.settings, pin))
            with model_route(self.settings, agent, meta) as route:
                terminal, usage = self._run_agent(agent, prompt, self.workspace, route)
        except RepoUnavailable as exc:
            return self._final(Final(kind="rejected", text=str(exc), **common))
        except PromptTooLong as exc:
            return self._final(Final(kind="rejected", text=f"This thread is too long to continue ({exc}). Start a new thread."))
        except GatewayUnavailable as exc:
            terminal, usage = AgentError(kind=ErrorKind.INFRA, message=str(exc)), {}
        common.update(usage)
        if isinstance(terminal, Result):
            answer = self.redact(terminal.text)
            remember(memory, q.thread_key, Turn(question=q.text, answer=answer), side, conversation.summary)
            if cache is not None:
                cache.put(repo.name, commit, agent.name, model, q.text, answer, self._elapsed())
            summary = summarise(side, q.text, answer)
            return self._final(Final(kind="answer", summary=summary and self.redact(summary),
                                     duration=self._elapsed(), **self._cited(answer, pin), **common))
        return self._final(self._error_final(terminal, common))

    def _cited(self, text: str, pin: Pin) -> dict[str, Any]:
        """The answer's text with its file references linked at the pinned commit, and the
        commit's link, when the repository has a web host (jobs/citations.py); then the
        pin's notice (a failed fetch), which is not the agent's and is never linked."""
        repo = pin.repo
        # A local checkout has no configured remote: its own origin names the web host.
        remote = repo.remote or (checkout_remote(repo.path) if pin.commit else None)
        try:
            linkable = pin.commit is not None and web_host(remote, repo.web_url) is not None
        except BadTemplate:  # cite() logs it; an answer never fails over a template
            linkable = False
        if not linkable:
            return {"text": with_notice(text, pin.notice)}
        # The tree checked is the snapshot the agent read; a cache hit leases it again
        # (it exists unless it sat unused long enough to be removed, then it is rebuilt).
        workspace = self.workspace or self._held.enter_context(mount_repo(self.settings, pin))
        # Bare names and symbols resolve through the snapshot's index, built once per commit.
        index = lazy(lambda: shared_index(self.redis, workspace.root))
        cited = cite(text, root=workspace.root, commit=pin.commit, remote=remote, web_url=repo.web_url, index=index)
        return {"text": with_notice(cited.text, pin.notice), "commit_url": cited.commit_url,
                "verified": cited.verified}

    def _session_meta(self, repo: str, model: str | None) -> SessionMeta:
        origin = self.question.origin
        sandbox = self.settings.sandbox
        return SessionMeta(
            job_id=self.job.id, user=origin.user, team=origin.team, channel=origin.channel, repo=repo, model=model,
            ttl=int(sandbox.sandbox_timeout) + self.settings.jobs.job_timeout_margin,
            budget_exempt=origin.user in self.settings.jobs.admins,
        )

    def _run_agent(self, agent: Agent, prompt: str, workspace: Workspace, route: GatewaySession | None
                   ) -> tuple[Result | AgentError, dict[str, Any]]:
        """The agent's run, through the gateway session when there is one: its terminal
        event and, metered by the gateway, the tokens it used."""
        q = self.question
        if route is not None:
            self.redact = self.redact.with_secrets([route.token.get_secret_value()])
        repo = workspace.root
        session = agent_session(self.settings, agent, prompt, repo=repo, masks=workspace.masks, model=q.model,
                                run_id=self.job.id,
                                labels={"job": self.job.id, "user": q.origin.user,
                                        "worker": self.job.worker_name or ""},  # reaped when that worker is gone
                                gateway=route)
        self.publisher.started()
        log.info("running %s (%s) on %s", agent.name, session.model or "default model", repo)
        terminal = self._follow(session, route)
        if route is None:
            return terminal, {}
        state = session_state(self.redis, route.id)
        self._stop_reason = self._stop_reason or state.stop_reason
        if isinstance(terminal, AgentError) and self._outage is None:
            self._upstream_down()  # the agent gave up on the gateway's 503s before we looked
        usage = {"tokens": state.total_tokens, "cost_usd": round(state.cost_usd, 6)}
        self.job.meta["usage"] = state.model_dump(exclude={"stop_reason"})
        self.job.save_meta()
        return terminal, usage

    def _follow(self, session: AgentSession, route: GatewaySession | None = None) -> Result | AgentError:
        stop = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(session, route, stop), daemon=True)
        watcher.start()
        terminal: Result | AgentError | None = None
        started = time.monotonic()
        first = True
        metrics.RUNNING_SANDBOXES.inc()
        try:
            redact = EventRedactor(self.redact)
            for event in session.events():
                if first:
                    metrics.CONTAINER_START.observe(time.monotonic() - started)
                    first = False
                if isinstance(event, (Result, AgentError)):
                    terminal = event
                elif (shown := redact(event)) is not None:
                    self.publisher.event(shown)
        finally:
            stop.set()
            metrics.RUNNING_SANDBOXES.dec()
            metrics.AGENT_TIME.observe(time.monotonic() - started)
        assert terminal is not None
        return terminal

    def _watch(self, session: AgentSession, route: GatewaySession | None, stop: threading.Event) -> None:
        # Cancellation is a Redis key, so any process can cancel without Docker access;
        # the gateway ends a run the same way (a quota used up, a budget crossed).
        while not stop.wait(0.5):
            if self.redis.exists(keys.cancel_request(self.job.id)):
                session.cancel()
                return
            if route is None:
                continue
            if reason := session_state(self.redis, route.id).stop_reason:
                self._stop_reason = reason
                session.cancel()
                return
            if self._upstream_down():  # the agent would retry the fast 503s for minutes
                session.cancel()
                return

    def _upstream_down(self) -> bool:
        """True (and the message kept) while the shared breaker has paused the Gemini API."""
        paused = upstream_paused(self.redis, self._provider)
        if paused is not None:
            api = {"anthropic": "Anthropic", "openai": "OpenAI"}.get(self._provider, "Gemini")
            self._outage = (f"The {api} API is failing; askbox paused calls to it for {paused:.0f} s "
                            "more. Please ask again in a minute.")
        return paused is not None

    def _error_final(self, error: AgentError, common: dict[str, Any]) -> Final:
        limits = self.settings.sandbox.limits()
        if self._stop_reason is not None:  # the gateway's reason says more than the agent's
            return Final(kind="rejected", text=self._stop_reason, duration=self._elapsed(), **common)
        if self._outage is not None:  # shown as an infrastructure fault, never retried into a loop
            return Final(kind="infra", text=f"{self._outage} Reference: {self.job.id}", reference=self.job.id,
                         duration=self._elapsed(), **common)
        match error.kind:
            case ErrorKind.CANCELLED:
                who = self.redis.get(keys.cancel_request(self.job.id))
                by = f" by {who.decode()}" if who else ""
                return Final(kind="cancelled", text=f"Cancelled{by}.", **common)
            case ErrorKind.TIMEOUT:
                done = self._progress_summary()
                return Final(kind="timeout", text=f"Timed out after {limits.timeout:.0f} s.{done} "
                             "Try a narrower question.", duration=self._elapsed(), **common)
            case ErrorKind.OOM:
                return Final(kind="oom", text=f"The agent ran out of memory ({limits.memory // 2**20} MiB). "
                             "Try a narrower question.", **common)
            case ErrorKind.INFRA:
                shown = getattr(self.publisher, "shown", True)
                if not shown and self.job.retries_left:
                    metrics.RETRIES.inc()
                    getattr(self.publisher, "close", lambda: None)()  # stop its sender thread now
                    raise InfraFault(error.message)  # RQ retries: nothing reached the user yet
                return Final(kind="infra", text=f"Something went wrong on our side ({error.message}). "
                             f"Reference: {self.job.id}", reference=self.job.id, **common)
        return Final(kind="agent_error", text=f"The agent failed: {self.redact(error.message)}", **common)

    def _progress_summary(self) -> str:
        steps = self.job.meta.get("progress", [])
        if not steps:
            return ""
        return " So far: " + "; ".join(s.split("] ", 1)[-1] for s in steps[-5:]) + "."

    def _elapsed(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def _final(self, final: Final) -> Final:
        metrics.count_question("cached" if final.cached else final.kind)
        log.info("question ended: %s after %.1f s", final.kind, self._elapsed(),
                 extra={"outcome": final.kind, "cached": final.cached})
        # Into the outbox, then delivered: a worker dying in between (the test-only crash
        # point) leaves it for the failure callback or the sweep, never lost or doubled.
        crash = self.settings.jobs.test_crash_at
        if not outbox.publish(self.redis, self.job.id, final, self.publisher.write_final,
                              self.publisher.deliver_final,
                              between=lambda: crash_point(crash, "after-outbox", with_parent=True)):
            log.warning("job %s: a final message was already written; not posting %s", self.job.id, final.kind)
        return final


def with_notice(text: str, notice: str | None) -> str:
    """The answer, with what the reader must know about its source (e.g. a stale commit)."""
    return f"{text}\n\n_{notice}_" if notice else text


def on_job_failure(job: Job, connection: Redis, exc_type: type, exc: BaseException, tb: object) -> None:
    """RQ failure callback: the job raised (RQ's timeout included), or its worker died
    (AbandonedJobError); the worker calls it too when its work-horse died under it
    (``WorkHorseDied``, jobs/worker.py), where RQ itself calls nothing.

    A retry is only for a failure before anything was shown (``keys.progress_shown``):
    a second run would show its progress again under the first's. So once the thread
    showed progress the retries are dropped here (RQ decides right after this callback,
    on this very job object) and the question ends with one final message saying what
    happened. When RQ will retry, stay silent."""
    if job.retries_left and connection.exists(keys.progress_shown(job.id)):
        log.warning("job %s failed (%s) after its progress was shown: ending it, not retrying", job.id,
                    exc_type.__name__)
        job.retries_left = 0
    if job.retries_left:
        return
    question = Question.model_validate(job.args[0])
    if exc_type.__name__ in ("AbandonedJobError", "WorkHorseDied"):
        text = f"The worker running this question stopped before it finished. Please ask again. Reference: {job.id}"
        kind = "infra"
    elif exc_type.__name__ == "JobTimeoutException":
        text = (f"This question took longer than askbox allows one question ({job.timeout} s) and was stopped. "
                f"Please ask again. Reference: {job.id}")
        kind = "timeout"
    else:
        text = f"Something went wrong on our side ({exc}). Reference: {job.id}"
        kind = "infra"
    metrics.count_question(kind)
    publisher_for(question, job, current_settings().slack).final(Final(kind=kind, text=text, reference=job.id))
