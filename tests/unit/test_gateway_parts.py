"""The gateway's pure parts: usage parsing, error details, prices, budgets, settings, and
the worker's client against no gateway."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from gateway.budgets import over_budget
from gateway.client import GatewayClient, GatewayUnavailable, SessionMeta
from gateway.errors import UpstreamError, describe_reset, next_pacific_midnight, parse_duration
from gateway.metering import estimate_cost, price_for
from gateway.settings import DEFAULT_PRICES, GatewaySettings
from gateway.usage import Usage, UsageTracker
from tests.fakes.gemini_api import daily_quota_exhausted, rate_limited


def sse(*usages: dict) -> bytes:
    return b"".join(
        b"data: " + json.dumps({"candidates": [], "usageMetadata": u}).encode() + b"\r\n\r\n" for u in usages
    )


def test_stream_usage_is_the_last_cumulative_chunk_not_the_sum():
    data = sse(
        {"promptTokenCount": 10, "candidatesTokenCount": 1, "totalTokenCount": 11},
        {
            "promptTokenCount": 10,
            "candidatesTokenCount": 5,
            "thoughtsTokenCount": 3,
            "cachedContentTokenCount": 4,
            "totalTokenCount": 18,
        },
    )
    tracker = UsageTracker(sse=True)
    for i in range(0, len(data), 7):  # split mid-line, as TCP may
        tracker.feed(data[i : i + 7])
    assert tracker.usage() == Usage(prompt=10, candidates=5, thoughts=3, cached=4, total=18)


def test_json_and_json_array_bodies_are_metered():
    body = json.dumps({"usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 5}}).encode()
    tracker = UsageTracker(sse=False)
    tracker.feed(body)
    assert tracker.usage() == Usage(prompt=3, total=5)
    array = json.dumps([{"usageMetadata": {"totalTokenCount": 1}}, {"usageMetadata": {"totalTokenCount": 9}}])
    tracker = UsageTracker(sse=False)
    tracker.feed(array.encode())
    assert tracker.usage() == Usage(total=9)
    assert UsageTracker(sse=True).usage() is None


def test_upstream_error_details():
    per_minute = UpstreamError.parse(json.dumps(rate_limited("1.5s").body()).encode())
    assert per_minute == UpstreamError(retry_delay=1.5, per_day_quota=None)
    per_day = UpstreamError.parse(json.dumps(daily_quota_exhausted().body()).encode())
    assert per_day.per_day_quota == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    assert per_day.retry_delay is None
    assert UpstreamError.parse(b"not json") == UpstreamError(None, None)
    assert parse_duration("250ms") == 0.25 and parse_duration("2s") == 2 and parse_duration("soon") is None


def test_reset_times():
    now = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
    assert next_pacific_midnight(now) == dt.datetime(2026, 1, 16, 8, 0, tzinfo=dt.UTC)  # PST
    assert describe_reset(dt.datetime(2026, 1, 15, 15, 12, tzinfo=dt.UTC), now) == "15:12 UTC (in 3 h 12 min)"


def test_prices_take_the_longest_prefix():
    assert price_for(DEFAULT_PRICES, "gemini-2.5-flash-lite-preview") == DEFAULT_PRICES["gemini-2.5-flash-lite"]
    assert price_for(DEFAULT_PRICES, "gemini-2.5-pro") == DEFAULT_PRICES["gemini-2.5-pro"]
    assert price_for({}, "x") == {}
    cost = estimate_cost(
        DEFAULT_PRICES, "gemini-2.5-pro", Usage(prompt=1_000_000, candidates=500_000, thoughts=500_000)
    )
    assert cost == pytest.approx(1.25 + 10.0)


def test_budgets():
    settings = GatewaySettings(budget_user_tokens=100, budget_channel_usd=1.0)
    meta = SessionMeta(job_id="j", user="U1", channel="C1")
    assert over_budget(settings, meta, {"user": {"tokens": 99}}) is None
    assert "100/100 tokens" in over_budget(settings, meta, {"user": {"tokens": 100}})
    assert "$1.50/$1.00" in over_budget(settings, meta, {"channel": {"cost_usd": 1.5}})
    assert over_budget(settings, meta.model_copy(update={"budget_exempt": True}), {"user": {"tokens": 1e9}}) is None
    assert over_budget(GatewaySettings(), meta, {"user": {"tokens": 1e9}}) is None


def test_key_pool_settings_merge_and_dedupe(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GEMINI_API_KEY", "k1")
    monkeypatch.setenv("ASKBOX_GEMINI_API_KEYS", " k2, k1 ,,k3")
    monkeypatch.setenv("ASKBOX_GEMINI_PRICES", '{"m": {"input": 1, "output": 2}}')
    settings = GatewaySettings()
    assert settings.api_keys() == ["k1", "k2", "k3"]
    assert "k2" not in repr(settings)
    assert settings.gemini_prices == {"m": {"input": 1, "output": 2}}


def test_client_without_a_gateway(tmp_path):
    client = GatewayClient(tmp_path)
    assert client.healthy() is False
    with pytest.raises(GatewayUnavailable) as raised:
        client.open(SessionMeta(job_id="j", user="U"))
    assert "askbox gateway" in str(raised.value) and f"ASKBOX_GATEWAY_SOCKET_DIR={tmp_path}" in str(raised.value)
    from gateway.meta import GatewaySession

    client.close(GatewaySession(id="x", token="t", socket_dir=tmp_path))  # logs, never raises
