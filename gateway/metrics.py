"""The gateway's Prometheus metrics (served on 127.0.0.1:ASKBOX_GATEWAY_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TOKENS = Counter("askbox_gateway_tokens", "Tokens metered from usageMetadata", ["kind", "model"])
REQUESTS = Counter("askbox_gateway_requests", "Agent requests by outcome", ["outcome"])
ABSORBED_429 = Counter("askbox_gateway_absorbed_429", "Upstream 429s retried instead of passed on")
UPSTREAM_ATTEMPTS = Counter("askbox_gateway_upstream_attempts", "Upstream attempts by status", ["status"])
WAIT = Histogram(
    "askbox_gateway_wait_seconds",
    "Time a request waited for the shared rate limit and retries before its first byte",
    buckets=(0.005, 0.05, 0.25, 1, 2.5, 5, 10, 30, 60, 120),
)
ESTIMATED = Counter(
    "askbox_gateway_estimated_tokens",
    "Tokens charged from a reservation: responses without usage, or cut off",
    ["model"],
)
COST = Counter("askbox_gateway_cost_usd", "Estimated cost from the price table", ["model"])
SESSIONS = Gauge("askbox_gateway_sessions", "Open sessions on this gateway")
BREAKER_OPENED = Counter("askbox_gateway_breaker_opened", "Times this gateway opened the circuit")
