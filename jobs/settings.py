"""The settings tree: every part's section, loaded once per process at its entry point.

Each part owns its section and is handed it (``Settings.load()`` in the CLI, the worker,
the bot, the gateway; the parts never read the environment themselves):

- ``redis`` (here): ``ASKBOX_REDIS_URL`` (and Sentinel's ``ASKBOX_REDIS_SENTINELS``), the one
  place it is defined, and ``client()``, the one way a process connects;
- ``jobs`` (here): repositories, the queue, memory and cache, the worker's timings;
- ``sandbox`` (sandbox/settings.py) and ``agents`` (sandbox/agents/settings.py);
- ``slack`` (jobs/slack/settings.py): the worker's side of Slack;
- ``gateway`` (gateway/settings.py): the model gateway and its limits;
- ``gemini`` (jobs/side_tasks/settings.py): the side tasks (triage, compaction, summaries);
- ``docker_filter`` (sandbox/docker_filter/settings.py): ``askbox docker-filter``'s socket and policy;
- ``tracing`` (jobs/tracing.py): OpenTelemetry's ``OTEL_EXPORTER_OTLP_ENDPOINT``, off when unset.

The bot's own section (app token, signing secret, channels) is bot/settings.py, the dashboard's is
bot/dashboard.py: jobs/ must not import bot/. Each section is a ``BaseSettings`` of its
own, so a bad value fails at start-up naming its variable (``ASKBOX_<FIELD>``).

Values that bot and worker must agree on are decided once: the RQ job timeout (the sum
of every phase's bound, ``Settings.job_timeout``) and the retries of a question are set
by the worker that takes it, from *its* settings and ``ASKBOX_RETRIES``, and carried on
the job (jobs/worker.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry
from redis.sentinel import Sentinel

from gateway.settings import GatewaySettings
from jobs import keys
from jobs.access import ANY, AccessRule
from jobs.repos.config import MAX_INSTRUCTIONS, RepoEntry, parse_repos, repos_from_file
from jobs.sentinel_connection import AsyncRediscoveringSentinelConnection, ClosingSentinelConnection
from jobs.side_tasks.settings import GeminiSettings
from jobs.slack.settings import SlackSettings
from jobs.tracing import TracingSettings
from sandbox.agents.settings import AgentSettings
from sandbox.docker_filter.settings import DockerFilterSettings
from sandbox.settings import SandboxSettings


class RedisSettings(BaseSettings):
    """Where Redis is, and the one way every process connects to it (``client()``).

    Without ``ASKBOX_REDIS_SENTINELS``: the server in ``ASKBOX_REDIS_URL``. With it: the
    master named ``ASKBOX_REDIS_MASTER``, found through those Sentinels, with the URL's
    credentials (user, password) and db number (TLS through Sentinel is not supported); the URL's host and port are then not
    used (the master moves on a failover; only the Sentinels are fixed). The Sentinels'
    own ``requirepass``, if set, is ``ASKBOX_REDIS_SENTINEL_PASSWORD``.
    """

    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    redis_url: str = Field(
        default="redis://localhost:6379/0",
        validation_alias=AliasChoices("ASKBOX_REDIS_URL"),
        description="Redis URL for host processes (compose sets it from ASKBOX_REDIS_PASSWORD): redis://:PASSWORD@host:6379/0.",
    )
    redis_sentinels: str = Field(default="", description='e.g. "redis-a:26379,redis-b:26379,redis-c:26379"')
    redis_master: str = Field(default="askbox", min_length=1, description="the master's name in the Sentinels' config")
    redis_sentinel_password: SecretStr | None = Field(
        default=None, description="The Sentinels' own password, when they require one."
    )

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_parse(cls, value: str) -> str:
        _parse_sentinels(value)
        return value

    @property
    def sentinels(self) -> tuple[tuple[str, int], ...]:
        return _parse_sentinels(self.redis_sentinels)

    def describe(self) -> str:
        """Where this connects, for messages: never the password."""
        if self.sentinels:
            where = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"master {self.redis_master!r} via Sentinels {where}{urlsplit(self.redis_url).path}"
        url = urlsplit(self.redis_url)
        return f"{url.hostname}:{url.port or 6379}{url.path}"

    def _master_kwargs(self) -> dict[str, Any]:
        url = urlsplit(self.redis_url)
        db = url.path.strip("/")
        return {
            "username": unquote(url.username) if url.username else None,
            "password": unquote(url.password) if url.password else None,
            "db": int(db) if db.isdigit() else 0,
        }

    def _sentinel_kwargs(self) -> dict[str, object]:
        password = self.redis_sentinel_password
        return {
            "password": password.get_secret_value() if password else None,
            "socket_timeout": SENTINEL_TIMEOUT,
            "socket_connect_timeout": SENTINEL_TIMEOUT,
        }

    def client(self, **kwargs: Any) -> Redis:
        """A client that rides out a Redis restart or a Sentinel failover of up to
        ``FAILOVER_PATIENCE`` seconds: each command is retried with backoff on a lost
        connection or a timeout (redis-py's ``Retry``), and through Sentinel each retry
        asks the Sentinels where the master is now (a demoted master's ``READONLY`` reply
        counts as a lost connection). Long-lived loops (RQ's worker, the bot's listeners)
        so see a failover as a slow command, not an error."""
        kwargs = {
            "retry": _retry(SyncRetry),
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_keepalive": True,
            **kwargs,
        }
        if not self.sentinels:
            return Redis.from_url(self.redis_url, **kwargs)
        sentinel = Sentinel(self.sentinels, sentinel_kwargs=self._sentinel_kwargs())
        return sentinel.master_for(
            self.redis_master, connection_class=ClosingSentinelConnection, **{**self._master_kwargs(), **kwargs}
        )

    def async_client(self, **kwargs: Any) -> AsyncRedis:
        """``client()`` for asyncio (the gateway): same server, same retries."""
        kwargs = {
            "retry": _retry(AsyncRetry),
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_keepalive": True,
            **kwargs,
        }
        if not self.sentinels:
            return AsyncRedis.from_url(self.redis_url, **kwargs)
        sentinel = AsyncSentinel(self.sentinels, sentinel_kwargs=self._sentinel_kwargs())
        return sentinel.master_for(
            self.redis_master,
            connection_class=AsyncRediscoveringSentinelConnection,
            **{**self._master_kwargs(), **kwargs},
        )


# The final message's Slack calls within a question's time: each waits for the team's
# rate budget (SlackOptions.final_wait, 60 s) and for Slack (its client's 30 s timeout).
# A delivery cut off past it is finished by the outbox sweep (jobs/outbox.py).
FINAL_DELIVERY_ALLOWANCE = 90.0

# How long a command keeps retrying while Redis is unreachable: a restart, or a Sentinel
# failover (down-after-milliseconds plus the election; docs/operations.md "Scaling out").
FAILOVER_PATIENCE = 20.0
CONNECT_TIMEOUT = 5.0
SENTINEL_TIMEOUT = 2.0


def _retry(kind: type[SyncRetry] | type[AsyncRetry]) -> SyncRetry | AsyncRetry:
    # 0.1, 0.2, 0.4, 0.8 s, then 1 s apart: about FAILOVER_PATIENCE in all.
    retries = 4 + int(FAILOVER_PATIENCE - 1.5)
    return kind(
        ExponentialBackoff(cap=1.0, base=0.1), retries, supported_errors=(RedisConnectionError, RedisTimeoutError)
    )


def _parse_sentinels(value: str) -> tuple[tuple[str, int], ...]:
    found = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f'ASKBOX_REDIS_SENTINELS: {item!r} is not host:port (e.g. "redis-a:26379,redis-b:26379")')
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


class JobSettings(BaseSettings):
    """Repositories, queue, memory and the worker's timings (``ASKBOX_*``)."""

    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    # NoDecode: parsed by parse_repos, whose messages name the entry (or where the JSON breaks).
    repos: Annotated[dict[str, RepoEntry], NoDecode] = Field(
        default_factory=dict, description='JSON, e.g. {"web": "/srv/repos/web", "api": {"url": "https://..."}}'
    )
    repos_file: Path | None = Field(default=None, description="TOML, one table per repository; added to ASKBOX_REPOS")
    # Compose mounts only this host folder into the worker (same path inside and out): a
    # local repository elsewhere cannot be seen there, which the worker says at start
    # (jobs/start_checks.py), askbox doctor reports, and a question's refusal names.
    repos_dir: Path | None = Field(
        default=None,
        description="Host folder holding the local repositories; compose mounts only it into the worker "
        "(default there /srv/repos): a repository outside it is reported at start and by askbox doctor.",
    )
    repo_mirrors: Path = Field(
        default=Path("/var/lib/askbox/mirrors"), description="this host's bare mirrors of git remotes"
    )
    repo_snapshots: Path = Field(
        default=Path("/var/lib/askbox/snapshots"),
        description="per-commit snapshots the sandboxes mount (same path for the Docker host)",
    )
    repo_refresh: float = Field(
        default=300, ge=1, description="seconds a mirror is fresh; fetched on schedule and on demand"
    )
    repo_fetch_timeout: float = Field(default=120, ge=1, description="Seconds one git fetch may take.")
    # What making a commit's snapshot may take within a question's time (Settings.job_timeout):
    # listing and copying its files out of the mirror (jobs/repos/snapshot.py).
    repo_snapshot_allowance: float = Field(default=120, ge=1, description="seconds a question allows for a snapshot")
    repo_snapshot_idle: float = Field(default=3600, ge=1, description="seconds unused before a snapshot is removed")
    # Which repositories each place may ask about (jobs/access.py). Here, not in the bot's
    # section, because the worker enforces them again for jobs that never met the bot.
    channel_repos: dict[str, str] = Field(default_factory=dict, description='{"C0123": "web"}: a channel\'s repo')
    # Added to the agent's prompt for questions asked there (jobs/prompt.py), after the repository's.
    channel_instructions: dict[str, str] = Field(
        default_factory=dict, description='{"C0123": "Readers are support engineers: explain behaviour"}'
    )
    repo_access: dict[str, AccessRule] = Field(
        default_factory=dict, description='{"secret": {"channels": ["C1"], "users": [], "dms": false, "shared": false}}'
    )
    # The worker's decision, never the payload's: whoever can write a job to Redis could
    # otherwise name "/" and get it mounted. Even when on, only terminal questions may.
    allow_repo_paths: bool = Field(default=False, description="terminal questions may name a directory as the repo")
    max_waiting: int = Field(default=200, ge=1, description="questions waiting beyond which new ones are refused")
    user_concurrency: int = Field(default=2, ge=1, description="questions of one user running at once")
    user_max_waiting: int = Field(
        default=10, ge=1, description="questions of one user waiting beyond which theirs are refused"
    )
    memory_turns: int = Field(default=10, ge=1, description="Turns of a thread kept in its conversation memory.")
    memory_ttl: int = Field(
        default=keys.MEMORY_TTL, ge=60, description="Seconds a thread's memory lives after its last use."
    )
    cache_ttl: int = Field(default=keys.CACHE_TTL, ge=60, description="Seconds a cached answer lives.")
    # RQ's own timeout is every phase's bound plus this margin (Settings.job_timeout), so
    # the sandbox's deadline always fires first and a slow fetch is not cut off by RQ.
    job_timeout_margin: int = Field(
        default=60, ge=10, description="seconds for container start and removal, and the rest"
    )
    retries: int = Field(default=2, ge=0, description="retries for infrastructure faults before any output")
    # How often a worker looks for jobs whose worker died; RQ's default is 10 minutes.
    maintenance_interval: int = Field(
        default=30, ge=5, description="Seconds between a worker's looks for jobs whose worker died."
    )
    job_monitoring_interval: int = Field(default=10, ge=1, description="Seconds between a busy worker's heartbeats.")
    # An idle worker blocks on Redis for worker_ttl - 15 s and only then does maintenance.
    worker_ttl: int = Field(default=45, ge=20, description="Seconds a worker's registration lives without a heartbeat.")
    reaper_interval: float = Field(default=60.0, gt=0, description="Seconds between sandbox reaper passes.")
    metrics_port: int = Field(default=0, ge=0, description="worker's Prometheus port; 0 = off")
    # A claim (jobs/claims.py) stays this short until its work is done: a process dying
    # mid-way blocks a redelivery of the same event for at most this long.
    pending_claim_ttl: int = Field(
        default=keys.PENDING_CLAIM_TTL,
        ge=1,
        description="Seconds a pending claim (a message or question being queued) holds before a redelivery may take it.",
    )
    # SIGTERM lets the running question finish (RQ's warm shutdown) for at most this long;
    # then its work-horse is killed and its sandbox removed. Below the supervisor's own
    # stop timeout (compose: stop_grace_period).
    shutdown_grace: float = Field(
        default=20.0, ge=0, description="Seconds a stopping worker lets its running question finish before stopping it."
    )
    # How often a worker delivers the finals written but not delivered (jobs/outbox.py).
    outbox_sweep_interval: float = Field(
        default=10.0,
        gt=0,
        description="Seconds between a worker's deliveries of finals written but not delivered (the outbox).",
    )
    # Test-only fault injection (tests/integration/test_faults.py): the process dies at
    # this named point (jobs/crash_points.py). Empty in every deployment.
    test_crash_at: str = Field(default="", description="test only: die at this point")
    # Slack user ids who may cancel any question and are exempt from usage budgets.
    admins: list[str] = Field(
        default_factory=list,
        description="Slack user ids who may cancel any question and are exempt from budgets (JSON list).",
    )

    @model_validator(mode="after")
    def _access_names_known_repos(self) -> JobSettings:
        # A misspelt name in the policy would silently leave the real repository open.
        unknown = sorted(set(self.repo_access) - set(self.repos) - {ANY}) if self.repos else []
        if unknown:
            raise ValueError(f"ASKBOX_REPO_ACCESS names {', '.join(map(repr, unknown))}, not in ASKBOX_REPOS")
        return self

    @field_validator("channel_instructions")
    @classmethod
    def _instructions_fit(cls, value: dict[str, str]) -> dict[str, str]:
        long = sorted(channel for channel, text in value.items() if len(text) > MAX_INSTRUCTIONS)
        if long:
            raise ValueError(f"the instructions for {', '.join(long)} are longer than {MAX_INSTRUCTIONS} characters")
        return value

    @field_validator("repos", mode="before")
    @classmethod
    def _repos(cls, value: object) -> dict[str, RepoEntry]:
        return parse_repos(value)

    @field_validator("repos_file")
    @classmethod
    def _repos_from_file(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        # Merged here, where the error is ASKBOX_REPOS_FILE's own: `repos` (validated
        # before this field) gains the file's entries.
        if path is not None and isinstance(info.data.get("repos"), dict):
            info.data["repos"].update(repos_from_file(path, info.data["repos"]))
        return path


class Settings(BaseModel):
    """One process's whole configuration. Frozen: parts are handed it, never change it."""

    model_config = ConfigDict(frozen=True)

    redis: RedisSettings = Field(default_factory=RedisSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    agents: AgentSettings = Field(default_factory=AgentSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    gemini: GeminiSettings = Field(default_factory=GeminiSettings)
    docker_filter: DockerFilterSettings = Field(default_factory=DockerFilterSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)

    def job_phases(self) -> dict[str, float]:
        """The longest each phase of a question may take, in seconds (see ``job_timeout``)."""
        jobs, gemini = self.jobs, self.gemini
        side = (
            (gemini.triage_timeout if gemini.enabled("triage") else 0.0)
            + (gemini.gemini_timeout if gemini.enabled("compaction") else 0.0)
            + (gemini.gemini_timeout if gemini.enabled("summary") else 0.0)
        )
        return {
            # A fetch of the repository's mirror may first wait for another process's
            # (the refresher's, another question's) to end: two fetches (jobs/repos/mirror.py).
            "fetch": 2 * jobs.repo_fetch_timeout,
            "snapshot": jobs.repo_snapshot_allowance,
            "side tasks": side,  # triage, compaction, summary (jobs/side_tasks/)
            "sandbox": self.sandbox.sandbox_timeout,  # the agent's own deadline
            "final delivery": FINAL_DELIVERY_ALLOWANCE,
            "margin": float(jobs.job_timeout_margin),
        }

    def job_timeout(self) -> int:
        """RQ's timeout for one question: the sum of every phase's bound (``job_phases``).

        The one place it is computed (the worker sets it on each job it takes, from its own
        settings): every phase's own bound fires before RQ's, so RQ's kill (which ends the
        question with one message, jobs/job.py ``on_job_failure``) is for a phase that
        overran its bound, not for a slow fetch in front of a full-length run."""
        return math.ceil(sum(self.job_phases().values()))

    def secret_values(self) -> list[str]:
        """Every configured secret (API keys, tokens, passwords), for redaction."""
        found: list[str] = []
        sections: list[BaseModel] = [self.redis, self.jobs, self.sandbox, self.agents, self.slack, self.gateway]
        while sections:
            section = sections.pop()
            for value in section.__dict__.values():
                for item in value if isinstance(value, (list, tuple)) else (value,):
                    if isinstance(item, SecretStr):
                        found.append(item.get_secret_value())
                    elif isinstance(item, BaseSettings):  # a section's own (each agent's)
                        sections.append(item)
        found += [entry.token.get_secret_value() for entry in self.jobs.repos.values() if entry.token]
        password = urlsplit(self.redis.redis_url).password
        return found + ([password] if password else [])

    @classmethod
    def variable(cls, section: str, field: str) -> str:
        """The environment variable of ``field`` of the settings class named ``section``
        (a ValidationError's title), for messages: ``ASKBOX_CURSOR_MODELS``."""
        pending: list[type[BaseModel]] = [f.annotation for f in cls.model_fields.values()]  # type: ignore[misc]
        while pending:
            kind = pending.pop()
            if kind.__name__ == section and issubclass(kind, BaseSettings):
                return f"{kind.model_config.get('env_prefix', '')}{field}".upper()
            pending += [
                f.annotation
                for f in kind.model_fields.values()
                if isinstance(f.annotation, type) and issubclass(f.annotation, BaseSettings)
            ]
        return f"ASKBOX_{field}".upper()

    @classmethod
    def load(cls) -> Settings:
        """Read and validate every section from the environment, once."""
        # Each section constructed on its own: a ValidationError then names its own
        # section and field, which the CLI turns into the variable to fix.
        return cls(
            redis=RedisSettings(),
            jobs=JobSettings(),
            sandbox=SandboxSettings(),
            agents=AgentSettings(),
            slack=SlackSettings(),
            gateway=GatewaySettings(),
            gemini=GeminiSettings(),
            docker_filter=DockerFilterSettings(),
            tracing=TracingSettings(),
        )
