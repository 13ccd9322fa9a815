"""``askbox doctor``: is this deployment able to answer, and if not, what to fix.

One line per check: ``ok``, ``warn`` (works, but not as configured), ``skip`` (not
configured, and optional) or ``FAIL`` with the fix; the exit status is 1 when anything
failed. Two depths:

- ``--config``: the settings alone, needing no service (what compose's one-shot
  ``preflight`` service runs before anything starts, so that a setting that cannot work
  stops ``docker compose up`` with its reason instead of a restart loop): the Redis URL's
  password, a model key for the agent that would answer, the dashboard's credentials,
  repositories outside ``ASKBOX_REPOS_DIR``, the Slack tokens' kinds;
- without it: the running services too (inside compose, ``docker compose run --rm
  --no-deps -T worker askbox doctor``): Docker and the images, Redis and a worker, the
  gateway and its keys, each repository pinned as a question would pin it (readable by
  the sandbox user), and Slack's ``auth.test`` with the bot token's scopes.

Each check reuses what the running code does (the worker's start checks' agent choice,
``pin_repo``, the gateway client), so doctor cannot pass where a question would fail.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from bot.cli.output import err
from jobs.settings import Settings

Status = Literal["ok", "warn", "skip", "FAIL"]

# The variables that give each provider a key, for the fix of a missing one.
KEY_VARIABLES = {
    "gemini": "GEMINI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY (or ASKBOX_OPENAI_BASE_URL for a self-hosted server)",
}
# What the bot and the worker call (docs/slack.md); assistant:write is optional (thread status).
# How long doctor waits for a worker to register: one started by the `up` just before is
# still running its start checks and egress self-test.
WORKER_PATIENCE = 45.0
# A password askbox can put into redis://:PASSWORD@host unencoded (and Redis's start script accepts).
URL_SAFE = re.compile(r"^(?:[A-Za-z0-9._~-]|%[0-9A-Fa-f]{2})*$")


@dataclass(frozen=True)
class Finding:
    status: Status
    text: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:<5} {self.text}" + (f": {self.fix}" if self.fix else "")


# -- the settings alone ---------------------------------------------------------------


def redis_url(settings: Settings) -> Finding:
    url = settings.redis.redis_url
    scheme, _, rest = url.partition("://")
    if scheme not in ("redis", "rediss"):
        return Finding("ok", f"Redis URL ({scheme}://)")
    userinfo = rest.rsplit("@", 1)[0] if "@" in rest else ""
    password = userinfo.partition(":")[2]
    if not URL_SAFE.match(password):
        return Finding(
            "FAIL",
            "the password in ASKBOX_REDIS_URL may hold only letters, digits and . _ ~ - (or %XX escapes)",
            "under compose set ASKBOX_REDIS_PASSWORD to such a value, e.g. `openssl rand -hex 32`",
        )
    return Finding("ok", f"Redis URL points at {settings.redis.describe()}")


def answering_agent(settings: Settings, cursor_image_present: bool = True) -> tuple[str, bool]:
    """The agent a question goes to when it names none, as the worker decides it
    (jobs/start_checks.py), and whether ASKBOX_AGENT chose it."""
    chosen = "agent" in settings.agents.model_fields_set
    if chosen:
        return settings.agents.agent, True
    if settings.agents.agent == "cursor" and (settings.agents.cursor.api_key is None or not cursor_image_present):
        return "gemini", False  # the worker's fallback
    return settings.agents.agent, False


def model_keys(settings: Settings, served: set[str] | None = None) -> Finding:
    """A key for the answering agent's model: cursor's own, or its provider's at the
    gateway (``served``: what the running gateway reports; None: from these settings)."""
    from sandbox.agents.adapters import agent_for

    name, chosen = answering_agent(settings)
    agent = agent_for(name, settings.agents)
    why = f"ASKBOX_AGENT={name}" if chosen else f"ASKBOX_AGENT is unset, so questions go to the {name} agent"
    if not agent.gateway_fronted:
        if settings.agents.cursor.api_key is None:
            return Finding("FAIL", f"no model can answer: {why}, which needs CURSOR_API_KEY", "set CURSOR_API_KEY")
        return Finding("ok", f"agent {name}: CURSOR_API_KEY set")
    provider = agent.provider or "gemini"
    if served is None:
        served = {config.name for config in settings.gateway.served()}
    if provider not in served:
        return Finding(
            "FAIL",
            f"no model can answer: {why}, whose provider ({provider}) has no key at the gateway",
            f"set {KEY_VARIABLES[provider]} (or another agent's: ANTHROPIC_API_KEY for claude, "
            "OPENAI_API_KEY for codex, CURSOR_API_KEY for cursor, with ASKBOX_AGENT naming it)",
        )
    return Finding("ok", f"agent {name}: the gateway has a key for {provider}")


def dashboard() -> Finding:
    from bot.dashboard import DashboardSettings

    try:
        DashboardSettings()
    except ValidationError as exc:
        unset = [Settings.variable(exc.title, str(e["loc"][0])) for e in exc.errors() if e["loc"]]
        return Finding(
            "FAIL",
            f"dashboard: {' and '.join(unset) or 'its settings'} unset or invalid (it never "
            "runs without a user and a password)",
            f"set {' and '.join(unset)} in .env",
        )
    return Finding("ok", "dashboard: user and password set")


def repositories_seen(settings: Settings, *, each: bool = True) -> Iterator[Finding]:
    from jobs.repos.visibility import outside

    jobs = settings.jobs
    if not jobs.repos:
        yield Finding(
            "warn",
            "no repository configured: every question will be refused",
            'set ASKBOX_REPOS (JSON, e.g. {"web": "/srv/repos/web"})',
        )
    for name, entry in jobs.repos.items() if each else ():
        if entry.path is not None and outside(entry.path, jobs.repos_dir):
            yield Finding(
                "FAIL",
                f"repository {name}: {entry.path} is outside ASKBOX_REPOS_DIR ({jobs.repos_dir}), "
                "the only folder of repositories the worker sees",
                f"move it under {jobs.repos_dir}, or set ASKBOX_REPOS_DIR to the folder that holds it",
            )


def slack_tokens(settings: Settings) -> Iterator[Finding]:
    from bot.settings import BotSettings

    token = settings.slack.slack_bot_token
    if token is not None and not token.get_secret_value().startswith("xoxb-"):
        yield Finding(
            "FAIL",
            "SLACK_BOT_TOKEN is not a bot token (xoxb-…)",
            "copy the Bot User OAuth Token from your Slack app's OAuth & Permissions page",
        )
    app = BotSettings().slack_app_token
    if app is not None and not app.get_secret_value().startswith("xapp-"):
        yield Finding(
            "FAIL",
            "SLACK_APP_TOKEN is not an app-level token (xapp-…)",
            "generate one with the connections:write scope under your Slack app's Basic Information",
        )


def config_findings(settings: Settings, *, live: bool) -> Iterator[Finding]:
    yield redis_url(settings)
    if not live:  # live, the gateway reports its keys and the dashboard is not this process's
        yield model_keys(settings)
        yield dashboard()
    yield from repositories_seen(settings, each=not live)  # live, each is pinned as a question would
    yield from slack_tokens(settings)


# -- the running services ---------------------------------------------------------------


def docker_and_images(settings: Settings) -> Iterator[Finding]:
    from sandbox import images
    from sandbox.agents.adapters import agent_for
    from sandbox.errors import SandboxInfraError
    from sandbox.factory import sandbox_from_settings

    try:
        client = sandbox_from_settings(settings.sandbox).client
        version = client.version().get("Version", "?")
    except (SandboxInfraError, OSError) as exc:
        yield Finding("FAIL", f"Docker: {exc}", "start the Docker daemon, or mount its socket / set DOCKER_HOST")
        return
    yield Finding("ok", f"Docker {version}")
    cursor = agent_for("cursor", settings.agents).image()
    name, _ = answering_agent(settings, cursor_image_present=images.present(client, cursor))
    wanted = {
        "sandbox": images.tag("sandbox"),
        "egress-proxy": images.tag("egress-proxy"),
        f"agent-{name}": agent_for(name, settings.agents).image(),
    }
    missing = [f"{label} ({image})" for label, image in wanted.items() if not images.present(client, image)]
    if missing:
        yield Finding(
            "FAIL",
            f"images missing: {', '.join(missing)}",
            "build them: `docker compose up -d` (its images service), or `askbox images build --missing`",
        )
    else:
        yield Finding("ok", f"images: {', '.join(wanted)} built")


def redis_and_workers(settings: Settings) -> Iterator[Finding]:
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
    from redis.retry import Retry
    from rq import Worker

    # One try, a short timeout: doctor reports, it does not ride out an outage.
    redis = settings.redis.client(retry=Retry(NoBackoff(), 0), socket_connect_timeout=3, socket_timeout=5)
    try:
        redis.ping()
        workers = Worker.count(connection=redis)
    except RedisError as exc:
        yield Finding(
            "FAIL",
            f"Redis at {settings.redis.describe()}: {str(exc).splitlines()[0] if str(exc) else exc!r}",
            "start it (`docker compose up -d redis`; on a host `redis-server --appendonly yes`), "
            "or fix ASKBOX_REDIS_URL",
        )
        return
    yield Finding("ok", f"Redis at {settings.redis.describe()}")
    deadline = time.monotonic() + WORKER_PATIENCE  # right after `up`, a worker is still starting
    while not workers and time.monotonic() < deadline:
        time.sleep(1)
        workers = Worker.count(connection=redis)
    if workers:
        yield Finding("ok", f"{workers} worker(s) registered")
    else:
        yield Finding(
            "FAIL",
            "no worker is running: questions would wait",
            "start one (`docker compose up -d worker`, whose `docker compose logs worker` says why it "
            "stopped; on a host `askbox worker`)",
        )


def gateway(settings: Settings) -> Iterator[Finding]:
    from gateway.client import GatewayClient, GatewayUnavailable
    from sandbox.agents.adapters import agent_for

    name, _ = answering_agent(settings)
    needed = agent_for(name, settings.agents).gateway_fronted
    try:
        health = GatewayClient(settings.gateway.gateway_socket_dir).health()
    except GatewayUnavailable as exc:
        need = f"the {name} agent needs it to answer" if needed else "side tasks and the other agents need it"
        yield Finding(
            "FAIL" if needed else "warn",
            f"gateway: not answering on {settings.gateway.control_socket} ({exc.why}); {need}",
            "start `askbox gateway` (compose: `docker compose up -d gateway`; `docker compose logs "
            "gateway` says why it stopped)",
        )
        return
    keys = {provider for provider, count in health.get("keys", {}).items() if count}
    yield Finding("ok", f"gateway: ready, keys for {', '.join(sorted(keys)) or 'nothing'}")
    for provider, state in sorted(health.get("breaker", {}).items()):
        if state != "closed":
            yield Finding("warn", f"gateway: the {provider} API's circuit breaker is {state} (upstream failing)")
    yield model_keys(settings, served=keys)


def repositories(settings: Settings) -> Iterator[Finding]:
    from jobs.agent_runs import pin_repo
    from jobs.repos import RepoUnavailable, resolve_repo

    for name in settings.jobs.repos:
        repo = resolve_repo(name, settings.jobs.repos, allow_paths=False)
        try:
            pinned = pin_repo(settings, repo)  # what a question does first: read or fetch, and check
        except RepoUnavailable as exc:
            yield Finding("FAIL", f"repository {name}: {exc}")
            continue
        where = repo.remote or str(repo.path)
        if pinned.commit is not None:
            yield Finding(
                "warn" if pinned.notice else "ok",
                f"repository {name}: {where} at {pinned.commit[:7]}" + (f" ({pinned.notice})" if pinned.notice else ""),
            )
        else:
            yield Finding(
                "ok", f"repository {name}: {where} (not a git checkout: mounted as it is), readable by the sandbox user"
            )


def slack(settings: Settings) -> Iterator[Finding]:
    from slack_sdk.errors import SlackApiError

    from jobs.slack.web_api import slack_client

    token = settings.slack.slack_bot_token
    if token is None:
        yield Finding("skip", "Slack: SLACK_BOT_TOKEN not set (the bot is optional; see docs/slack.md)")
        return
    if not token.get_secret_value().startswith("xoxb-"):
        return  # said by slack_tokens(): not a bot token, so auth.test tells nothing more
    client = slack_client(token.get_secret_value(), settings.slack.slack_api_url)
    client.retry_handlers = []  # one try: doctor reports
    try:
        response = client.auth_test()
    except SlackApiError as exc:
        yield Finding(
            "FAIL",
            f"Slack: auth.test answered {exc.response.get('error')}",
            "check SLACK_BOT_TOKEN (the Bot User OAuth Token of the installed app)",
        )
        return
    except OSError as exc:
        yield Finding("FAIL", f"Slack not reachable: {exc}", "check the network, HTTPS_PROXY or ASKBOX_SLACK_API_URL")
        return
    scopes = {s.strip() for h, v in response.headers.items() if h.lower() == "x-oauth-scopes" for s in v.split(",")}
    from bot.manifest import SCOPES  # the one list of what askbox's calls need

    missing = [scope for scope in SCOPES if scope not in scopes]
    where = f"{response.get('team')} as {response.get('user')}"
    if missing:
        yield Finding(
            "FAIL",
            f"Slack: {where}, but the bot token lacks {', '.join(missing)}",
            "reinstall the app from `askbox slack manifest` (or add them under OAuth & Permissions)",
        )
    else:
        yield Finding("ok", f"Slack: {where}, scopes complete")


LIVE: tuple[Callable[[Settings], Iterator[Finding]], ...] = (
    docker_and_images,
    redis_and_workers,
    gateway,
    repositories,
    slack,
)


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    findings = list(config_findings(settings, live=not args.config))
    for line in findings:
        print(line.line(), flush=True)
    if not args.config:
        for check in LIVE:
            for finding in check(settings):
                print(finding.line(), flush=True)
                findings.append(finding)
    problems = sum(finding.status == "FAIL" for finding in findings)
    err(f"doctor: {problems} problem(s)" if problems else "doctor: no problems")
    return 1 if problems else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check Docker, images, Redis, the gateway, repositories and Slack; one line per problem with its fix",
    )
    doctor.add_argument(
        "--config", action="store_true", help="check the settings only, no service (compose's preflight runs this)"
    )
    doctor.set_defaults(func=cmd_doctor)
