"""How one agent run is put together from the settings tree.

The pipeline (jobs/pipeline/), which the worker, ``askbox ask --inline`` and ``askbox
eval`` all run, starts its agent here: the same repository snapshot (``pin_repo``,
``mount_repo``), sandbox, limits, runtime (``ASKBOX_SANDBOX_RUNTIME``), egress and model
route for each.

The model route: an agent the gateway can front (the Gemini CLI, Claude Code, Codex CLI)
never gets a real key. The run opens a gateway session for its agent's provider first; the sandbox gets the session's socket directory
mounted and bridged to ``127.0.0.1:GATEWAY_PORT``, the per-run token as its key and no
egress at all. No gateway answering means no run (``GatewayUnavailable`` names the fix).
cursor-agent speaks its own protocol to Cursor and keeps ``CURSOR_API_KEY`` (docs/agents.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from gateway.client import GatewayClient, GatewaySession, SessionMeta
from jobs import tracing
from jobs.repos import Pin, RepoRef, RepoUnavailable, Workspace, mount, pin
from jobs.repos.visibility import outside
from jobs.settings import JobSettings, Settings
from sandbox.agents.adapters import Agent
from sandbox.agents.session import AgentSession
from sandbox.bridges import SocketBridge
from sandbox.factory import sandbox_from_settings
from sandbox.spec import Masks

GATEWAY_PORT = 8100  # inside the sandbox; any free loopback port would do
GATEWAY_MOUNT = "/run/askbox-gateway"


def pin_repo(settings: Settings, repo: RepoRef) -> Pin:
    """The commit this question is answered from (a remote's mirror fetched if stale);
    raises ``RepoUnavailable`` with the message to show (jobs/repos/workspace.py)."""
    jobs = settings.jobs
    with tracing.span("askbox.repo.pin", {"askbox.repo": repo.name}):
        return _pin(repo, jobs)


def _pin(repo: RepoRef, jobs: JobSettings) -> Pin:
    if repo.path is not None and outside(repo.path, jobs.repos_dir):  # not "does not exist": why
        raise RepoUnavailable(
            f"The repository {repo.name} is configured at {repo.path}, outside ASKBOX_REPOS_DIR "
            f"({jobs.repos_dir}), the only folder of repositories this worker sees: move it "
            "there, or set ASKBOX_REPOS_DIR to the folder that holds it."
        )
    return pin(repo, jobs.repo_mirrors, jobs.repo_refresh, jobs.repo_fetch_timeout)


def mount_repo(settings: Settings, pinned: Pin) -> AbstractContextManager[Workspace]:
    """The pinned commit's read-only snapshot, leased while the agent runs."""
    return mount(pinned, settings.jobs.repo_snapshots)


@contextmanager
def model_route(settings: Settings, agent: Agent, meta: SessionMeta) -> Iterator[GatewaySession | None]:
    """The gateway session this agent's run talks through (None for agents it cannot
    front), revoked when the run ends however it ends."""
    if not agent.gateway_fronted:
        yield None
        return
    client = GatewayClient(settings.gateway.gateway_socket_dir)
    # GatewayUnavailable when no gateway answers
    session = client.open(meta.model_copy(update={"provider": agent.provider}))
    try:
        yield session
    finally:
        client.close(session)


def agent_session(
    settings: Settings,
    agent: Agent,
    prompt: str,
    repo: Path | None,
    model: str | None = None,
    masks: Masks | None = None,
    run_id: str | None = None,
    labels: dict[str, str] | None = None,
    gateway: GatewaySession | None = None,
) -> AgentSession:
    """A session ready to run (raises ``PromptTooLong`` for a prompt over ``MAX_PROMPT_BYTES``)."""
    sandbox = settings.sandbox
    egress = sandbox.egress_entries() or None
    bridges: tuple[SocketBridge, ...] = ()
    if gateway is not None:
        bridge = SocketBridge(
            host_dir=gateway.socket_dir, socket=gateway.socket.name, port=GATEWAY_PORT, mount_point=GATEWAY_MOUNT
        )
        agent = agent.with_endpoint(bridge.url, gateway.token.get_secret_value())
        egress, bridges = (), (bridge,)
    return AgentSession(
        sandbox_from_settings(sandbox),
        agent,
        prompt,
        repo=repo,
        masks=masks,
        model=model,
        limits=sandbox.limits(),
        egress_allow=egress,
        run_id=run_id,
        labels=labels,
        runtime=sandbox.sandbox_runtime,
        bridges=bridges,
    )
