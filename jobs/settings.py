"""The settings tree: every part's section, loaded once per process at its entry point.

Each part owns its section and is handed it (``Settings.load()`` in the CLI, the worker,
the bot, the gateway; the parts never read the environment themselves):

- ``redis`` (here): ``ASKBOX_REDIS_URL``, the one place it is defined;
- ``jobs`` (here): repositories, the queue, memory and cache, the worker's timings;
- ``sandbox`` (sandbox/settings.py) and ``agents`` (sandbox/agents/settings.py);
- ``slack`` (jobs/slack/settings.py): the worker's side of Slack;
- ``gateway`` (jobs/gateway/settings.py): the model gateway and its limits;
- ``gemini`` (jobs/gemini/settings.py): the Gemini side tasks (triage, compaction, summaries).

The bot's own section (app token, signing secret, channels) is bot/settings.py, the dashboard's is
bot/dashboard.py: jobs/ must not import bot/. Each section is a ``BaseSettings`` of its
own, so a bad value fails at start-up naming its variable (``ASKBOX_<FIELD>``).

Values that bot and worker must agree on are decided once: the RQ job timeout and the
retries of a question are set by the worker that first takes it, from *its* sandbox
deadline and ``ASKBOX_RETRIES``, and carried on the job (jobs/worker.py).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis import Redis

from jobs import keys
from jobs.gateway.settings import GatewaySettings
from jobs.gemini.settings import GeminiSettings
from jobs.slack.settings import SlackSettings
from sandbox.agents.settings import AgentSettings
from sandbox.settings import SandboxSettings


class RedisSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    redis_url: str = Field(default="redis://localhost:6379/0", validation_alias=AliasChoices("ASKBOX_REDIS_URL"))

    def client(self, **kwargs: object) -> Redis:
        return Redis.from_url(self.redis_url, **kwargs)  # type: ignore[arg-type]


class JobSettings(BaseSettings):
    """Repositories, queue, memory and the worker's timings (``ASKBOX_*``)."""

    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    repos: dict[str, Path] = Field(default_factory=dict, description='JSON, e.g. {"web": "/srv/repos/web"}')
    # The worker's decision, never the payload's: whoever can write a job to Redis could
    # otherwise name "/" and get it mounted. Even when on, only terminal questions may.
    allow_repo_paths: bool = Field(default=False, description="terminal questions may name a directory as the repo")
    max_waiting: int = Field(default=200, ge=1, description="questions waiting beyond which new ones are refused")
    user_concurrency: int = Field(default=2, ge=1, description="questions of one user running at once")
    user_max_waiting: int = Field(default=10, ge=1, description="questions of one user waiting beyond which theirs are refused")
    memory_turns: int = Field(default=10, ge=1)
    memory_ttl: int = Field(default=keys.MEMORY_TTL, ge=60)
    cache_ttl: int = Field(default=keys.CACHE_TTL, ge=60)
    # RQ's own timeout sits above the sandbox deadline so the sandbox always fires first.
    job_timeout_margin: int = Field(default=60, ge=10)
    retries: int = Field(default=2, ge=0, description="retries for infrastructure faults before any output")
    # How often a worker looks for jobs whose worker died; RQ's default is 10 minutes.
    maintenance_interval: int = Field(default=30, ge=5)
    job_monitoring_interval: int = Field(default=10, ge=1)
    # An idle worker blocks on Redis for worker_ttl - 15 s and only then does maintenance.
    worker_ttl: int = Field(default=45, ge=20)
    reaper_interval: float = Field(default=60.0, gt=0)
    metrics_port: int = Field(default=0, ge=0, description="worker's Prometheus port; 0 = off")
    # A claim (jobs/claims.py) stays this short until its work is done: a process dying
    # mid-way blocks a redelivery of the same event for at most this long.
    pending_claim_ttl: int = Field(default=keys.PENDING_CLAIM_TTL, ge=1)
    # SIGTERM lets the running question finish (RQ's warm shutdown) for at most this long;
    # then its work-horse is killed and its sandbox removed. Below the supervisor's own
    # stop timeout (compose: stop_grace_period).
    shutdown_grace: float = Field(default=25.0, ge=0)
    # How often a worker delivers the finals written but not delivered (jobs/outbox.py).
    outbox_sweep_interval: float = Field(default=10.0, gt=0)
    # Test-only fault injection (tests/integration/test_faults.py): the process dies at
    # this named point (jobs/crash_points.py). Empty in every deployment.
    test_crash_at: str = Field(default="", description="test only: die at this point")
    # Slack user ids who may cancel any question and are exempt from usage budgets.
    admins: list[str] = Field(default_factory=list)


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

    def secret_values(self) -> list[str]:
        """Every configured secret (API keys, tokens, passwords), for redaction."""
        found: list[str] = []
        for section in (self.redis, self.jobs, self.sandbox, self.agents, self.slack, self.gateway):
            for value in section.__dict__.values():
                for item in value if isinstance(value, (list, tuple)) else (value,):
                    if isinstance(item, SecretStr):
                        found.append(item.get_secret_value())
        password = urlsplit(self.redis.redis_url).password
        return found + ([password] if password else [])

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
        )
