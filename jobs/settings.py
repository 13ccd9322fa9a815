"""Queue, worker and memory settings from ``ASKBOX_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class JobSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    redis_url: str = "redis://localhost:6379/0"
    repos: dict[str, Path] = Field(default_factory=dict, description='JSON, e.g. {"web": "/srv/repos/web"}')
    max_waiting: int = Field(default=200, ge=1, description="questions waiting beyond which new ones are refused")
    user_concurrency: int = Field(default=2, ge=1, description="questions of one user running at once")
    memory_turns: int = Field(default=10, ge=1)
    memory_ttl: int = Field(default=7 * 24 * 3600, ge=60)
    cache_ttl: int = Field(default=30 * 24 * 3600, ge=60)
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
