"""ASKBOX_REDIS_SENTINELS and friends: parsed once, errors name the variable, the URL's
credentials and db go to the master, and no message carries the password."""

import pytest
from redis.sentinel import SentinelConnectionPool

from bot.cli import main
from jobs.sentinel_connection import ClosingSentinelConnection
from jobs.settings import FAILOVER_PATIENCE, RedisSettings, Settings


def test_sentinels_from_the_environment(monkeypatch):
    monkeypatch.setenv("ASKBOX_REDIS_URL", "redis://:s3cr%40t@ignored-host:6390/4")
    monkeypatch.setenv("ASKBOX_REDIS_SENTINELS", "redis-a:26379, redis-b:26380,[::1]:26381")
    monkeypatch.setenv("ASKBOX_REDIS_MASTER", "prod")
    monkeypatch.setenv("ASKBOX_REDIS_SENTINEL_PASSWORD", "sentinel-pw")
    settings = RedisSettings()
    assert settings.sentinels == (("redis-a", 26379), ("redis-b", 26380), ("::1", 26381))
    client = settings.client()
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "prod"
    assert pool.connection_class is ClosingSentinelConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["password"], kwargs["db"]) == ("s3cr@t", 4)  # the URL's, unquoted; its host is not used
    assert [s.connection_pool.connection_kwargs["password"] for s in pool.sentinel_manager.sentinels] == [
        "sentinel-pw"
    ] * 3
    described = settings.describe()
    assert "redis-a:26379" in described and "prod" in described and "s3cr" not in described
    assert "sentinel-pw" in Settings.load().secret_values()  # redacted from logs like the URL's password


def test_every_client_retries_through_a_failover():
    retry = RedisSettings().client().get_retry()
    sleeps = sum(retry._backoff.compute(n) for n in range(1, retry.get_retries() + 1))
    assert FAILOVER_PATIENCE - 2 <= sleeps <= FAILOVER_PATIENCE + 2
    assert RedisSettings().async_client().get_retry().get_retries() == retry.get_retries()


def test_a_bad_sentinel_list_names_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("ASKBOX_REDIS_SENTINELS", "redis-a:26379,redis-b")
    assert main(["cancel", "some-job"]) == 2
    err = capsys.readouterr().err
    assert "ASKBOX_REDIS_SENTINELS" in err and "'redis-b' is not host:port" in err


@pytest.mark.parametrize("value", ["", " , "])
def test_no_sentinels_is_the_plain_url(monkeypatch, value):
    monkeypatch.setenv("ASKBOX_REDIS_SENTINELS", value)
    monkeypatch.setenv("ASKBOX_REDIS_URL", "redis://:pw@redis-host:6390/2")
    settings = RedisSettings()
    kwargs = settings.client().connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis-host", 6390, 2)
    assert settings.describe() == "redis-host:6390/2"
