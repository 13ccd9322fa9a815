"""Sending one agent request upstream (one provider's: each has its own ``Upstream``): a
key from the pool, the shared limits, the breaker, and retries before anything reached
the agent. A 429's advice (Gemini's RetryInfo, the others' ``retry-after``) is read by
the provider.

Retries use tenacity (its AsyncRetrying loop, stop and wait combinators); what is ours
is the classification of each upstream answer:

- 429 with a per-day QuotaFailure: that key is marked out for the day (until midnight
  Pacific, when the API resets it) and the request moves to another key; when no key is
  left the caller gets AllKeysExhausted;
- other 429s: the key cools down for ``RetryInfo.retryDelay`` (plus jitter) on every
  gateway and the request retries at once on the next admissible key (the pool waits if
  none is), bounded by the max wait and attempt count; they never open the breaker;
- 5xx, timeouts, connection errors: a breaker failure and exponential backoff with
  jitter, at most ``gateway_retries`` times;
- a redirect is never followed (it would carry the key to another host): the caller
  gets UpstreamRedirect;
- anything else (2xx, other 4xx) goes back to the caller, unread, to be streamed.

Every call, countTokens too, takes a turn under the shared limits on a key that is not
cooling down: each one spends the key's quota.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from multidict import CIMultiDict
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter
from yarl import URL

from gateway import metrics
from gateway.breaker import RedisBreaker
from gateway.errors import next_pacific_midnight
from gateway.keypool import ApiKey, KeyPool
from gateway.providers import Call, Provider
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

# Never passed back: aiohttp has decoded and re-frames the body.
DROP_RESPONSE = {"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive"}


def ssl_context(ca_dir: Path | None) -> ssl.SSLContext:
    """The system store plus the host's extra CA certificates (TLS-inspecting proxies)."""
    context = ssl.create_default_context()
    if ca_dir is not None and ca_dir.is_dir():
        for cert in sorted(ca_dir.rglob("*")):
            if cert.suffix in (".crt", ".pem") and cert.is_file():
                try:
                    context.load_verify_locations(cafile=str(cert))
                except ssl.SSLError as exc:
                    log.warning("skipping CA file %s: %s", cert, exc)
    return context


class UpstreamRetryable(Exception):
    """An upstream answer worth another attempt (status 0 = no answer at all)."""

    def __init__(
        self, status: int, body: bytes, headers: CIMultiDict[str] | None = None, transient: bool = True
    ) -> None:
        super().__init__(f"upstream answered {status or 'nothing'}")
        self.status = status
        self.body = body
        self.headers = headers or CIMultiDict()
        self.transient = transient  # 5xx / network (backoff) as opposed to 429 (key cooldown)


class UpstreamRedirect(Exception):
    """Upstream answered a redirect, which is never followed."""

    def __init__(self, status: int) -> None:
        super().__init__(f"upstream answered a redirect ({status})")
        self.status = status


@dataclass
class Attempts:
    """What happened before the answer: for metering and the agent's error."""

    absorbed_429: int = 0
    transient: int = 0
    waited: float = 0.0  # seconds spent waiting for the limits
    key: ApiKey | None = None
    statuses: list[int] = field(default_factory=list)


class Upstream:
    def __init__(
        self,
        settings: GatewaySettings,
        provider: Provider,
        pool: KeyPool,
        breaker: RedisBreaker,
        base_url: str | None = None,
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.base_url = (base_url or settings.gemini_base_url).rstrip("/")
        self.pool = pool
        self.breaker = breaker
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ssl=ssl_context(self.settings.gateway_ca_dir))
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.settings.gateway_connect_timeout, sock_read=self.settings.gateway_read_timeout
        )
        # trust_env: HTTPS_PROXY / NO_PROXY of the host, as every other outbound call.
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=True)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, call: Call, attempts: Attempts) -> aiohttp.ClientResponse:
        """An upstream response to stream to the agent (2xx or a final error).

        Raises BreakerOpen, LimitTimeout, AllKeysExhausted, UpstreamRedirect, or
        UpstreamRetryable (retries used up).
        """
        url = URL(self.base_url + call.path).with_query(list(call.query))
        start = time.monotonic()
        settings = self.settings
        backoff = wait_exponential_jitter(initial=settings.gateway_backoff_initial, max=settings.gateway_backoff_max)

        def stop(state: RetryCallState) -> bool:
            return (
                state.attempt_number >= settings.gateway_max_attempts
                or attempts.transient > settings.gateway_retries
                or time.monotonic() - start >= settings.gateway_max_wait
            )

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            # A 429 has already cooled its key; the pool waits for an admissible key.
            return backoff(state) if isinstance(exc, UpstreamRetryable) and exc.transient else 0.0

        retrying = AsyncRetrying(stop=stop, wait=wait, retry=retry_if_exception_type(UpstreamRetryable), reraise=True)
        async for attempt in retrying:
            with attempt:
                return await self._attempt(url, call, attempts, start)
        raise AssertionError("unreachable: tenacity re-raises the last UpstreamRetryable")

    async def _attempt(self, url: URL, call: Call, attempts: Attempts, start: float) -> aiohttp.ClientResponse:
        assert self._session is not None, "Upstream.start() first"
        await self.breaker.check()
        remaining = self.settings.gateway_max_wait - (time.monotonic() - start)
        key, waited = await self.pool.lease(max(0.0, remaining))
        attempts.waited += waited
        attempts.key = key
        headers = CIMultiDict(call.headers)
        self.provider.authorize(headers, key.secret)
        try:
            # Never follow a redirect: aiohttp would resend the key to wherever it points.
            response = await self._session.post(url, headers=headers, data=call.body, allow_redirects=False)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return await self._transient(attempts, 0, repr(exc).encode(), None)
        metrics.UPSTREAM_ATTEMPTS.labels(str(response.status)).inc()
        attempts.statuses.append(response.status)
        if 300 <= response.status < 400:
            response.release()
            log.warning(
                "upstream answered %s (a redirect to %s): not followed",
                response.status,
                response.headers.get("location", "nowhere")[:200],
            )
            raise UpstreamRedirect(response.status)
        if response.status == 429:
            data = await response.read()
            error = self.provider.upstream_error(data, response.headers)
            if error.per_day_quota:
                await self.pool.exhaust_for_day(key, next_pacific_midnight().timestamp(), error.per_day_quota)
            else:
                delay = error.retry_delay if error.retry_delay is not None else settings_backoff(self.settings)
                await self.pool.cool(key, delay * random.uniform(1.0, 1.25))
                attempts.absorbed_429 += 1
                metrics.ABSORBED_429.inc()
            raise UpstreamRetryable(429, data, CIMultiDict(response.headers), transient=False)
        if response.status >= 500:
            data = await response.read()
            return await self._transient(attempts, response.status, data, CIMultiDict(response.headers))
        await self.breaker.success()
        return response

    async def _transient(
        self, attempts: Attempts, status: int, body: bytes, headers: CIMultiDict[str] | None
    ) -> aiohttp.ClientResponse:
        attempts.transient += 1
        if await self.breaker.failure():
            metrics.BREAKER_OPENED.inc()
            log.warning("upstream circuit opened after %s", status or body.decode(errors="replace"))
        raise UpstreamRetryable(status, body, headers)


def settings_backoff(settings: GatewaySettings) -> float:
    """The cooldown of a 429 that carries no RetryInfo."""
    return settings.gateway_backoff_initial * 2
