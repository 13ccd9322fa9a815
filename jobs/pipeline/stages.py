"""The stages of a question before and after its agent runs, each a function of the run
and of what the stage before it returned.

A stage that ends the question (a refusal, a triage reply, a cache hit) raises
``Ended`` with its final; the sequence (jobs/pipeline/__init__.py) takes it from there.
The agent's own stage is jobs/pipeline/agent.py.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.client import SessionMeta, check_budget
from jobs import access, metrics, tracing
from jobs.agent_runs import mount_repo, pin_repo
from jobs.cache import AnswerCache
from jobs.citations import cite
from jobs.final import Final
from jobs.memory import ThreadMemory
from jobs.pipeline.agent import upstream_down
from jobs.pipeline.run import Ended, InfraFault, Run
from jobs.pipeline.values import AgentOutcome, Pinned, Target, Thread
from jobs.prompt import Turn
from jobs.repos import Pin, RepoUnavailable, UnknownRepo, resolve_repo
from jobs.side_tasks import compaction
from jobs.side_tasks import triage as triage_task
from jobs.side_tasks.side_call import GeminiCalls
from jobs.side_tasks.summary import summarise
from jobs.tree_index import lazy, shared_index
from jobs.web_host import BadTemplate, checkout_remote, web_host
from sandbox.agents.adapters import agent_for
from sandbox.agents.events import AgentError, ErrorKind
from sandbox.agents.models import ModelRefused, check_model

log = logging.getLogger(__name__)


def authorize(run: Run) -> Target:
    """Only what this question's origin may see, checked again here since a job written
    straight into Redis never met the bot: another name reads like an unknown one."""
    q, jobs = run.question, run.settings.jobs
    repos = access.visible(jobs.repos, q.origin, jobs.repo_access, jobs.channel_repos)
    if jobs.repos and not repos and not (q.repo and ("/" in q.repo or q.repo.startswith(("~", ".")))):
        # (A path is left to resolve_repo, which says paths are not accepted here.)
        raise Ended(Final(kind="rejected", text="No repository is open here."))
    try:
        repo = resolve_repo(q.repo, repos, allow_paths=run.allow_paths)
    except UnknownRepo as exc:
        raise Ended(Final(kind="rejected", text=str(exc))) from None
    agent = agent_for(q.agent, run.settings.agents)
    run.provider = agent.provider or "gemini"
    try:  # the bot checked it too, but a job written straight into Redis never met the bot
        model = agent.model(check_model(agent.name, q.model, run.settings.agents))
    except ModelRefused as exc:
        raise Ended(Final(kind="rejected", text=str(exc))) from None
    return Target(repo, agent, model)


def pin(run: Run, target: Target) -> Pinned:
    """The commit the question is answered from (a stale mirror is fetched first)."""
    try:
        return Pinned(target, pin_repo(run.settings, target.repo))
    except RepoUnavailable as exc:
        raise Ended(Final(kind="rejected", text=str(exc), repo=target.repo.name)) from None


def recall(run: Run, pinned: Pinned) -> Thread:
    """The thread so far (its last turns and summary)."""
    jobs, settings = run.settings.jobs, run.settings
    memory = ThreadMemory(run.redis, jobs.memory_turns, jobs.memory_ttl)
    side = GeminiCalls(
        settings.gemini,
        settings.gateway.gateway_socket_dir,
        run.redis,
        run.session_meta(pinned.target.repo.name, settings.gemini.gemini_model),
    )
    return Thread(memory, memory.load(run.question.thread_key), side)


def triage(run: Run, pinned: Pinned, thread: Thread) -> None:
    """Small talk is answered at once: no cache, no container."""
    q = run.question
    if q.force_agent or (reply := triage_task.triage(thread.side, q.text, thread.conversation)) is None:
        return
    reply = run.redact(reply)
    remember(run, thread, reply)
    raise Ended(
        Final(
            kind="answer",
            text=triage_task.with_note(reply),
            duration=run.elapsed(),
            repo=pinned.target.repo.name,
            model=thread.side.model,
        )
    )


def cached(run: Run, pinned: Pinned, thread: Thread) -> AnswerCache | None:
    """The cache a fresh answer goes into; an answer found there ends the question.

    Only a thread's first question is answered from (or stored in) the cache: a
    follow-up means something different after a different conversation."""
    q = run.question
    if thread.conversation.turns:
        return None
    cache = AnswerCache(run.redis, ttl=run.settings.jobs.cache_ttl, scope=access.cache_scope(q.origin))
    if q.fresh:
        return cache
    target = pinned.target
    hit = cache.get(target.repo.name, pinned.pin.commit, target.agent.name, target.model, q.text)
    if hit is None:
        return cache
    remember(run, thread, hit.text)
    raise Ended(
        Final(
            kind="answer",
            cached=True,
            duration=run.elapsed(),
            **cited(run, f"{hit.text}\n\n_{hit.notice()}_", pinned.pin),
            **pinned.common,
        )
    )


def budget(run: Run, pinned: Pinned) -> SessionMeta:
    """The agent's gateway session, checked before any container starts: the budgets it
    counts against, and the model API not paused by every gateway."""
    target = pinned.target
    meta = run.session_meta(target.repo.name, target.model).model_copy(update={"provider": run.provider})
    if not target.agent.gateway_fronted:
        return meta
    refusal = check_budget(run.redis, run.settings.gateway, meta)
    if refusal is not None:
        raise Ended(Final(kind="rejected", text=refusal, **pinned.common))
    if upstream_down(run):  # no container for nothing
        raise Ended(failed(run, pinned, AgentOutcome(AgentError(kind=ErrorKind.INFRA, message="paused"))))
    return meta


def store(run: Run, pinned: Pinned, cache: AnswerCache | None, answer: str) -> None:
    """The fresh answer into the cache the question was looked up in (if any)."""
    if cache is not None:
        target = pinned.target
        cache.put(
            target.repo.name,
            pinned.pin.commit,
            target.agent.name,
            target.model,
            run.question.text,
            answer,
            run.elapsed(),
        )


def answered(run: Run, pinned: Pinned, thread: Thread, outcome: AgentOutcome, answer: str) -> Final:
    """The agent's answer (redacted) as its final: summarised when long, cited."""
    summary = summarise(thread.side, run.question.text, answer)
    return Final(
        kind="answer",
        summary=summary and run.redact(summary),
        duration=run.elapsed(),
        **cited(run, answer, pinned.pin),
        **pinned.common,
        **outcome.usage,
    )


def failed(run: Run, pinned: Pinned, outcome: AgentOutcome) -> Final:
    """The final of an agent's run that gave no answer, in the words that say most."""
    common = {**pinned.common, **outcome.usage}
    error = outcome.terminal
    assert isinstance(error, AgentError)
    limits = run.settings.sandbox.limits()
    if run.stop_reason is not None:  # the gateway's reason says more than the agent's
        return Final(kind="rejected", text=run.stop_reason, duration=run.elapsed(), **common)
    if run.outage is not None:  # shown as an infrastructure fault, never retried into a loop
        return Final(
            kind="infra",
            text=f"{run.outage} Reference: {run.run_id}",
            reference=run.run_id,
            duration=run.elapsed(),
            **common,
        )
    match error.kind:
        case ErrorKind.CANCELLED:
            who = run.cancelled_by()
            return Final(kind="cancelled", text=f"Cancelled{f' by {who}' if who else ''}.", **common)
        case ErrorKind.TIMEOUT:
            steps = run.destination.steps()
            done = " So far: " + "; ".join(s.split("] ", 1)[-1] for s in steps[-5:]) + "." if steps else ""
            return Final(
                kind="timeout",
                text=f"Timed out after {limits.timeout:.0f} s.{done} Try a narrower question.",
                duration=run.elapsed(),
                **common,
            )
        case ErrorKind.OOM:
            return Final(
                kind="oom",
                text=f"The agent ran out of memory ({limits.memory // 2**20} MiB). Try a narrower question.",
                **common,
            )
        case ErrorKind.INFRA:
            if run.destination.retry():
                metrics.RETRIES.inc()
                raise InfraFault(error.message)  # run again: nothing reached the user yet
            return Final(
                kind="infra",
                text=f"Something went wrong on our side ({error.message}). Reference: {run.run_id}",
                reference=run.run_id,
                **common,
            )
    return Final(kind="agent_error", text=f"The agent failed: {run.redact(error.message)}", **common)


def cited(run: Run, text: str, pin: Pin) -> dict[str, Any]:
    """The answer's text with its file references linked at the pinned commit, the
    commit's link and the counts, when the repository has a web host (jobs/citations.py);
    then the pin's notice (a failed fetch), which is not the agent's and is never linked."""
    repo = pin.repo
    # A local checkout has no configured remote: its own origin names the web host.
    remote = repo.remote or (checkout_remote(repo.path) if pin.commit and repo.path else None)
    try:
        linkable = pin.commit is not None and web_host(remote, repo.web_url) is not None
    except BadTemplate:  # cite() logs it; an answer never fails over a template
        linkable = False
    if not linkable:
        return {"text": with_notice(text, pin.notice)}
    # The tree checked is the snapshot the agent read; a cache hit leases it again
    # (it exists unless it sat unused long enough to be removed, then it is rebuilt).
    workspace = run.workspace or run.held.enter_context(mount_repo(run.settings, pin))
    # Bare names and symbols resolve through the snapshot's index, built once per commit.
    index = lazy(lambda: shared_index(run.redis, workspace.root))
    linked = cite(text, root=workspace.root, commit=pin.commit, remote=remote, web_url=repo.web_url, index=index)
    return {
        "text": with_notice(linked.text, pin.notice),
        "commit_url": linked.commit_url,
        "verified": linked.verified,
        "references": linked.found,
    }


def remember(run: Run, thread: Thread, answer: str) -> None:
    """The turn into the thread's memory; what leaves its window is folded into its summary."""
    q = run.question
    compaction.remember(
        thread.memory, q.thread_key, Turn(question=q.text, answer=answer), thread.side, thread.conversation.summary
    )


@tracing.traced("askbox.final")  # its Slack posts are its children
def finalize(run: Run, final: Final) -> Final:
    """Counted, logged, and handed to the run's destination."""
    metrics.count_question("cached" if final.cached else final.kind)
    log.info(
        "question ended: %s after %.1f s",
        final.kind,
        run.elapsed(),
        extra={"outcome": final.kind, "cached": final.cached},
    )
    run.destination.final(final)
    return final


def with_notice(text: str, notice: str | None) -> str:
    """The answer, with what the reader must know about its source (e.g. a stale commit)."""
    return f"{text}\n\n_{notice}_" if notice else text
