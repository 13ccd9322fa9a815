"""What ``askbox worker`` checks before it takes a question, so that a worker that could not
answer any question stops at once with one line naming the fix instead of failing every
question (or restarting forever under compose).

Fatal (``StartCheckFailed``): the Docker daemon unreachable, the sandbox or egress proxy
image missing, or the agent chosen with ``ASKBOX_AGENT`` unable to run (its image
missing, cursor-agent without ``CURSOR_API_KEY``). Warnings (logged, the worker serves):
no repository configured, a configured local repository this worker cannot see (outside
``ASKBOX_REPOS_DIR``, or missing), and the *default* agent (cursor, ``ASKBOX_AGENT`` unset)
unable to run while the Gemini agent can: the worker then answers with the Gemini agent
(what ``docker compose up`` gives where Cursor's download servers are unreachable and
agent-cursor could not be built).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from jobs.repos.visibility import unseen
from jobs.settings import Settings
from sandbox import images
from sandbox.agents.adapters import Agent, agent_for
from sandbox.agents.settings import AGENT_NAMES
from sandbox.errors import SandboxInfraError
from sandbox.runner import Sandbox

log = logging.getLogger(__name__)

BUILD_HINT = "build it with `askbox images build` (or `docker compose up`, whose images service builds it)"


class StartCheckFailed(RuntimeError):
    """The worker cannot answer any question; the CLI prints it as one line and exits 2."""


@dataclass(frozen=True)
class Checked:
    """The settings the worker serves with (the default agent possibly replaced) and the
    warnings it logged."""

    settings: Settings
    warnings: tuple[str, ...]


def agent_problem(agent: Agent, present: set[str]) -> str | None:
    """Why this agent cannot run on this host, or None."""
    image = agent.image()
    if image not in present:
        hint = BUILD_HINT
        if agent.name == "cursor":
            hint = (
                "build it where Cursor's download servers are reachable (`askbox images build agent-cursor`) "
                "or set ASKBOX_CURSOR_IMAGE to a copy built elsewhere"
            )
        return f"the {agent.name} agent's image {image} is missing: {hint}"
    if agent.name == "cursor" and agent.settings.cursor.api_key is None:
        return "the cursor agent has no key: set CURSOR_API_KEY"
    return None


def check(settings: Settings, box: Sandbox) -> Checked:
    """Run every start check; raise ``StartCheckFailed`` on the first fatal one."""
    try:
        client = box.client
    except SandboxInfraError as exc:
        raise StartCheckFailed(f"{exc}") from None
    present: set[str] = set()
    wanted = [
        images.tag("sandbox"),
        images.tag("egress-proxy"),
        *(agent_for(name, settings.agents).image() for name in AGENT_NAMES),
    ]
    for image in wanted:
        if images.present(client, image):
            present.add(image)
    for name in ("sandbox", "egress-proxy"):
        if images.tag(name) not in present:
            raise StartCheckFailed(f"image {images.tag(name)} is missing: {BUILD_HINT}")

    warnings: list[str] = []
    jobs = settings.jobs
    if not jobs.repos and not jobs.allow_repo_paths:
        warnings.append(
            "no repository configured: every question will be refused until ASKBOX_REPOS is set "
            '(JSON, e.g. {"web": "/srv/repos/web"})'
        )
    for name, entry in jobs.repos.items():  # under compose, a path outside ASKBOX_REPOS_DIR is not here
        if entry.path is not None and (why := unseen(name, entry.path, jobs.repos_dir)) is not None:
            warnings.append(f"{why}; questions about it will be refused")
    default = agent_for(None, settings.agents)
    problem = agent_problem(default, present)
    if problem is not None:
        if "agent" in settings.agents.model_fields_set:  # chosen with ASKBOX_AGENT: honour it or stop
            raise StartCheckFailed(f"ASKBOX_AGENT={default.name}, but {problem}")
        fallback = agent_for("gemini", settings.agents)
        if default.name == "gemini" or agent_problem(fallback, present) is not None:
            raise StartCheckFailed(f"{problem} (or set ASKBOX_AGENT=gemini with its image built)")
        warnings.append(f"{problem}; answering with the Gemini agent instead (set ASKBOX_AGENT=gemini to say so)")
        agents = settings.agents.model_copy(update={"agent": "gemini"})
        settings = settings.model_copy(update={"agents": agents})
    for warning in warnings:
        log.warning("%s", warning)
    return Checked(settings, tuple(warnings))
