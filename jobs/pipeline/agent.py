"""Running the agent: the snapshot mounted, the gateway session opened, the sandbox
started, its events followed to the end (and to the destination), and what the gateway
metered read back.

While it runs a watcher ends it early: a cancel request (a Redis key, so any process can
cancel without Docker access), the gateway's stop reason (a quota used up, a budget
crossed), or the model API paused by every gateway (the agent would retry the fast 503s
for minutes).
"""

from __future__ import annotations

import logging
import threading
import time

from gateway.client import GatewaySession, GatewayUnavailable, SessionMeta, session_state, upstream_paused
from jobs import keys, metrics, tracing
from jobs.agent_runs import agent_session, model_route, mount_repo
from jobs.final import Final
from jobs.pipeline.run import Ended, Run
from jobs.pipeline.values import AgentOutcome, Pinned, Thread
from jobs.prompt import build_prompt, setting_for
from jobs.redaction import EventRedactor
from jobs.repos import RepoUnavailable
from sandbox.agents.adapters import Agent
from sandbox.agents.events import AgentError, ErrorKind, Result
from sandbox.agents.session import AgentSession, PromptTooLong

log = logging.getLogger(__name__)

TITLES = {"anthropic": "Anthropic", "openai": "OpenAI"}  # the API's name in the outage message; else Gemini


def run_agent(run: Run, pinned: Pinned, thread: Thread, meta: SessionMeta) -> AgentOutcome:
    """The agent's run on the pinned snapshot, prompted with the thread so far."""
    q, target, conversation = run.question, pinned.target, thread.conversation
    setting = setting_for(run.settings.jobs, target.repo.name, pinned.pin.commit, q.origin.channel, q.origin.kind)
    prompt = build_prompt(q.text, setting, conversation.turns, conversation.summary)
    try:
        run.workspace = run.held.enter_context(mount_repo(run.settings, pinned.pin))
        # The gateway session opened inside the run's span: its requests are the run's children.
        with (
            tracing.span("askbox.sandbox.run", {"askbox.agent": target.agent.name, "askbox.model": meta.model or ""}),
            model_route(run.settings, target.agent, meta) as route,
        ):
            return _run(run, target.agent, prompt, route)
    except RepoUnavailable as exc:
        raise Ended(Final(kind="rejected", text=str(exc), **pinned.common)) from None
    except PromptTooLong as exc:
        raise Ended(
            Final(kind="rejected", text=f"This thread is too long to continue ({exc}). Start a new thread.")
        ) from None
    except GatewayUnavailable as exc:
        return AgentOutcome(AgentError(kind=ErrorKind.INFRA, message=str(exc)))


def _run(run: Run, agent: Agent, prompt: str, route: GatewaySession | None) -> AgentOutcome:
    if route is not None:
        run.redact = run.redact.with_secrets([route.token.get_secret_value()])
    assert run.workspace is not None
    session = agent_session(
        run.settings,
        agent,
        prompt,
        repo=run.workspace.root,
        masks=run.workspace.masks,
        model=run.question.model,
        run_id=run.run_id,
        labels=dict(run.labels),
        gateway=route,
    )
    run.destination.started()
    log.info("running %s (%s) on %s", agent.name, session.model or "default model", run.workspace.root)
    try:
        terminal = _follow(run, session, route)
    finally:
        if run.one_off:
            session.sandbox.release_egress(session.spec)  # no Squid outlives this process
    state = None
    if route is not None:
        state = session_state(run.redis, route.id)
        run.stop_reason = run.stop_reason or state.stop_reason
        if isinstance(terminal, AgentError) and run.outage is None:
            upstream_down(run)  # the agent gave up on the gateway's 503s before we looked
    shown = terminal.model_copy(
        update={"text": run.redact(terminal.text)}
        if isinstance(terminal, Result)
        else {"message": run.redact(terminal.message)}
    )
    run.destination.ended(shown, state)
    usage = {} if state is None else {"tokens": state.total_tokens, "cost_usd": round(state.cost_usd, 6)}
    return AgentOutcome(terminal, usage)


def _follow(run: Run, session: AgentSession, route: GatewaySession | None) -> Result | AgentError:
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(run, session, route, stop), daemon=True)
    watcher.start()
    terminal: Result | AgentError | None = None
    started = time.monotonic()
    first = True
    metrics.RUNNING_SANDBOXES.inc()
    try:
        redact = EventRedactor(run.redact)
        for event in session.events():
            if first:
                metrics.CONTAINER_START.observe(time.monotonic() - started)
                first = False
            if isinstance(event, (Result, AgentError)):
                terminal = event
            elif (shown := redact(event)) is not None:
                run.destination.event(shown)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP in a CLI (bot/cli/signals.py): no sandbox left behind
        session.cancel()
        raise
    finally:
        stop.set()
        metrics.RUNNING_SANDBOXES.dec()
        metrics.AGENT_TIME.observe(time.monotonic() - started)
    assert terminal is not None
    return terminal


def _watch(run: Run, session: AgentSession, route: GatewaySession | None, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        if run.redis.exists(keys.cancel_request(run.run_id)):
            session.cancel()
            return
        if route is None:
            continue
        if reason := session_state(run.redis, route.id).stop_reason:
            run.stop_reason = reason
            session.cancel()
            return
        if upstream_down(run):
            session.cancel()
            return


def upstream_down(run: Run) -> bool:
    """True (and the message kept on the run) while the shared breaker has paused the
    agent's provider's API."""
    paused = upstream_paused(run.redis, run.provider)
    if paused is not None:
        api = TITLES.get(run.provider, "Gemini")
        run.outage = (
            f"The {api} API is failing; askbox paused calls to it for {paused:.0f} s "
            "more. Please ask again in a minute."
        )
    return paused is not None
