"""The gateway's two HTTP faces (aiohttp): the control API on ``control.sock`` (sessions,
health) and the model API proxy on every session socket.

Each provider with a key (gateway/settings.py ``served()``) has a lane of its own: its
provider module (route table, allowlist, meter), key pool, shared limits, breaker and
upstream. A session is opened for one provider and one model (``SessionMeta``), and its
socket serves that provider's API only.

A request on a session socket goes: the token (401/403), the session's own state (ended:
429 with why), its requests in flight (``ASKBOX_GATEWAY_SESSION_CONCURRENCY``, else 429),
the provider's route table and body allowlist (refused: 403/400, never forwarded), the
spend reserved against the budgets (gateway/reservations.py), upstream (limits, key
pool, breaker, retries), then the answer streamed back and its spend settled.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from gateway import metrics
from gateway.breaker import BreakerOpen, RedisBreaker
from gateway.budgets import over_budget
from gateway.errors import describe_reset, error_response
from gateway.keypool import AllKeysExhausted, KeyPool
from gateway.limiter import LimitTimeout, SharedLimits
from gateway.meta import SessionMeta
from gateway.metering import Charge, Meter, estimate_cost, is_priced, price_for
from gateway.providers import Call, Provider, Refused, provider_for
from gateway.reservations import BudgetHeld, BudgetUsedUp, Reservation, Reservations
from gateway.sessions import AuthError, Session, Sessions
from gateway.settings import GatewaySettings, ProviderConfig
from gateway.upstream import DROP_RESPONSE, Attempts, Upstream, UpstreamRedirect, UpstreamRetryable
from gateway.usage import Usage, UsageTracker
from jobs import tracing

log = logging.getLogger(__name__)


@dataclass
class Lane:
    """One provider's way upstream: its wire protocol, keys, shared limits and breaker."""

    provider: Provider
    config: ProviderConfig
    limits: SharedLimits
    pool: KeyPool
    breaker: RedisBreaker
    upstream: Upstream

    @classmethod
    def build(cls, settings: GatewaySettings, config: ProviderConfig, redis: Redis) -> Lane:
        provider = provider_for(config.name, settings.gateway_reserve_output_tokens)
        limits = SharedLimits(redis, settings, config.name)
        pool = KeyPool(redis, limits, list(config.keys), provider.title)
        breaker = RedisBreaker(
            redis, config.name, settings.gateway_breaker_threshold, settings.gateway_breaker_cooldown
        )
        return cls(
            provider, config, limits, pool, breaker, Upstream(settings, provider, pool, breaker, config.base_url)
        )


class Gateway:
    """Everything one gateway process holds; the two apps' handlers are its methods."""

    def __init__(self, settings: GatewaySettings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.lanes = {config.name: Lane.build(settings, config, redis) for config in settings.served()}
        self.meter = Meter(redis)
        self.reservations = Reservations(redis, settings)
        self.proxy_runner = web.AppRunner(self.proxy_app(), handle_signals=False, access_log=None)
        self.control_runner = web.AppRunner(self.control_app(), handle_signals=False, access_log=None)
        self.sessions = Sessions(redis, settings.gateway_socket_dir, self.proxy_runner)

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        for lane in self.lanes.values():
            await lane.upstream.start()
        await self.proxy_runner.setup()
        await self.control_runner.setup()
        self.sessions.remove_stale_dirs()
        control = web.UnixSite(self.control_runner, str(self.settings.control_socket))
        await control.start()
        self.settings.control_socket.chmod(0o660)  # the worker (same user or group) only

    async def close(self) -> None:
        await self.sessions.close_all()
        await self.control_runner.cleanup()
        await self.proxy_runner.cleanup()
        for lane in self.lanes.values():
            await lane.upstream.close()
        self.settings.control_socket.unlink(missing_ok=True)

    # -- control API ------------------------------------------------------------

    def control_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/sessions", self.open_session)
        app.router.add_delete("/sessions/{id}", self.close_session)
        app.router.add_get("/health", self.health)
        app.router.add_route("*", "/{tail:.*}", self.refuse_on_control)
        return app

    async def open_session(self, request: web.Request) -> web.Response:
        try:
            meta = SessionMeta.model_validate(await request.json())
        except ValueError as exc:
            return error_response(400, f"bad session metadata: {exc}")
        if not meta.model:  # the route table binds it: a session without one could call nothing
            return error_response(400, "bad session metadata: a session needs the model its agent runs")
        lane = self.lanes.get(meta.provider)
        if lane is None:
            return error_response(
                400,
                f"this gateway has no {meta.provider} key: set {KEY_VARIABLES[meta.provider]}"
                " where `askbox gateway` runs",
            )
        if not is_priced(lane.config.prices, meta.model):
            log.warning(
                "no price for %s model %s: metered at the most expensive known price %s",
                meta.provider,
                meta.model,
                price_for(lane.config.prices, meta.model),
            )
        session, token = await self.sessions.open(meta)
        return web.json_response({"id": session.id, "token": token, "socket_dir": str(session.directory)})

    async def close_session(self, request: web.Request) -> web.Response:
        closed = await self.sessions.close(request.match_info["id"])
        return web.json_response({"closed": closed})

    async def health(self, request: web.Request) -> web.Response:
        lanes = self.lanes.values()
        return web.json_response(
            {
                "ok": True,
                "sessions": len(self.sessions),
                "breaker": {lane.config.name: await lane.breaker.state() for lane in lanes},
                "keys": {lane.config.name: len(lane.pool.keys) for lane in lanes},
            }
        )

    async def refuse_on_control(self, request: web.Request) -> web.Response:
        metrics.REQUESTS.labels("refused_auth").inc()
        return error_response(403, "The askbox gateway's control socket does not serve a model API.")

    # -- the proxy ----------------------------------------------------------------

    def proxy_app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)  # long agent histories
        # Every method and path comes here: the provider's route table decides what is
        # served, so a refusal names what is allowed instead of a bare 404/405.
        app.router.add_route("*", "/{tail:.*}", self.proxy)
        return app

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        session = self.sessions.on_socket(request)
        lane = self.lanes.get(session.meta.provider) if session is not None else None
        provider = lane.provider if lane is not None else next(iter(self.lanes.values())).provider
        try:
            session = self.sessions.authenticate(request, provider.client_token(request))
        except AuthError as exc:
            metrics.REQUESTS.labels("refused_auth").inc()
            return provider.error(exc.status, str(exc))
        if lane is None:  # not reached: a session is opened only for a provider served here
            return provider.error(403, f"This gateway does not serve {session.meta.provider}.")
        if session.stop_reason:
            metrics.REQUESTS.labels("refused_stopped").inc()
            return provider.error(429, session.stop_reason)
        limit = self.settings.gateway_session_concurrency
        if session.in_flight >= limit:  # before the body is read: a burst holds no memory
            metrics.REQUESTS.labels("refused_concurrency").inc()
            return provider.error(
                429,
                f"askbox lets one question make at most {limit} model requests at once; retry when one has finished.",
                retry_after=1.0,
            )
        session.in_flight += 1
        try:
            body = await request.read()
            try:
                call = provider.admit(
                    request.method,
                    request.rel_url.raw_path,
                    list(request.query.items()),
                    request.headers,
                    body,
                    session.meta.model or "",
                )
            except Refused as exc:
                metrics.REQUESTS.labels("refused_request").inc()
                log.warning(
                    "session %s: refused %s %s: %s", session.id, request.method, request.rel_url.raw_path[:200], exc
                )
                return provider.error(exc.status, str(exc))
            attributes = {
                "askbox.provider": lane.config.name,
                "askbox.model": call.model,
                "askbox.job": session.meta.job_id,
            }
            with tracing.span("askbox.gateway.request", attributes, parent=session.meta.trace) as span:
                response = await self._forward(request, session, lane, call)
                if span is not None:
                    span.set_attribute("http.response.status_code", response.status)
                return response
        finally:
            session.in_flight -= 1

    async def _forward(self, request: web.Request, session: Session, lane: Lane, call: Call) -> web.StreamResponse:
        """Reserve the call's spend, send it upstream, relay and settle the answer."""
        provider = lane.provider
        reservation = None
        if call.metered:
            usd = estimate_cost(
                lane.config.prices, call.model, Usage(prompt=call.prompt_tokens, candidates=call.output_tokens)
            )
            try:
                reservation = await self.reservations.reserve(
                    session.id,
                    session.meta,
                    call.prompt_tokens + call.output_tokens,
                    usd,
                    stopped=lambda: session.stop_reason is not None,
                    title=provider.title,
                )
            except BudgetUsedUp as exc:
                metrics.REQUESTS.labels("budget").inc()
                return await self._stop(session, provider, str(exc))
            except BudgetHeld as exc:
                metrics.REQUESTS.labels("budget_held").inc()
                if session.stop_reason:
                    return provider.error(429, session.stop_reason)
                return provider.error(
                    429,
                    f"The {provider.title} budget's room left is held by requests in flight "
                    f"(waited {exc.waited:.0f} s); retry shortly.",
                    retry_after=2.0,
                )
        attempts = Attempts()
        started = time.monotonic()
        relayed = False
        label = provider.label[0].upper() + provider.label[1:]  # "The Gemini API"
        try:
            try:
                upstream = await lane.upstream.send(call, attempts)
            except BreakerOpen as exc:
                metrics.REQUESTS.labels("breaker_open").inc()
                return provider.error(
                    503,
                    f"{label} is failing; askbox paused calls to it (retry in {exc.retry_in:.0f} s).",
                    retry_after=exc.retry_in,
                )
            except LimitTimeout as exc:
                metrics.REQUESTS.labels("wait_timeout").inc()
                return provider.error(
                    429,
                    f"askbox's shared {provider.title} rate limit is saturated: waited {exc.waited:.0f} s for a turn.",
                    retry_after=5.0,
                )
            except AllKeysExhausted as exc:
                metrics.REQUESTS.labels("daily_quota").inc()
                return await self._stop(session, provider, daily_message(exc, self.settings))
            except UpstreamRedirect as exc:
                metrics.REQUESTS.labels("upstream_redirect").inc()
                return provider.error(
                    502, f"{label} answered with a redirect ({exc.status}); askbox never follows one."
                )
            except UpstreamRetryable as exc:
                metrics.REQUESTS.labels("upstream_error").inc()
                if exc.status == 0:
                    return provider.error(502, f"{label} could not be reached after retries.")
                headers = {k: v for k, v in exc.headers.items() if k.lower() not in DROP_RESPONSE}
                return web.Response(status=exc.status, body=exc.body, headers=headers)
            metrics.WAIT.observe(time.monotonic() - started)
            relayed = True
            return await self._relay(request, session, lane, upstream, call, reservation, attempts)
        finally:
            if reservation is not None and not relayed:
                # Nothing was billed (no answer, or an error answer): the room is free again.
                await self.meter.release(reservation)

    async def _relay(
        self,
        request: web.Request,
        session: Session,
        lane: Lane,
        upstream: aiohttp.ClientResponse,
        call: Call,
        reservation: Reservation | None,
        attempts: Attempts,
    ) -> web.StreamResponse:
        """Stream the upstream answer through chunk by chunk, metering it as it passes."""
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in DROP_RESPONSE}
        response = web.StreamResponse(status=upstream.status, headers=headers)
        tracker = lane.provider.usage_tracker(upstream.headers.get("content-type", ""))
        outcome = "ok" if upstream.status < 400 else f"upstream_{upstream.status}"
        settled = False
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                tracker.feed(chunk)
                await response.write(chunk)  # no buffering: first-token latency unchanged
            # Settled before the stream's end reaches the agent, so a budget crossed by this
            # answer refuses the agent's very next request.
            settled = True
            await self._settle(session, lane, call, reservation, tracker, attempts, upstream.status, whole=True)
            await response.write_eof()
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
            # Mid-stream: the status line is out, so no retry; the agent sees a cut stream.
            outcome = "cut"
            log.warning("stream of session %s cut: %r", session.id, exc)
        finally:
            upstream.release()
            metrics.REQUESTS.labels(outcome).inc()
            if not settled:  # cut off (or cancelled): charged its reservation at least
                await self._settle(session, lane, call, reservation, tracker, attempts, upstream.status, whole=False)
        return response

    async def _settle(
        self,
        session: Session,
        lane: Lane,
        call: Call,
        reservation: Reservation | None,
        tracker: UsageTracker,
        attempts: Attempts,
        status: int,
        *,
        whole: bool,
    ) -> None:
        if status >= 400:  # an error answer is not billed
            if reservation is not None:
                await self.meter.release(reservation)
            return
        usage = tracker.usage()
        if reservation is None:  # not billed upstream (countTokens)
            charge = Charge(0, 0.0, usage, estimated=False)
        else:
            charge = Charge.settle(lane.config.prices, call.model, reservation, usage, whole)
        if attempts.key is not None:
            await lane.limits.charge(attempts.key.id, charge.tokens)
        totals = await self.meter.record(
            session.id, session.meta, call.model, charge, reservation, attempts.waited, attempts.absorbed_429
        )
        reason = over_budget(self.settings, session.meta, totals, session.id, title=lane.provider.title)
        if reason:
            await self._stop(session, lane.provider, reason)

    async def _stop(self, session: Session, provider: Provider, reason: str) -> web.Response:
        """End the session: every later request is refused, the worker reads why."""
        session.stop_reason = session.stop_reason or reason
        await self.meter.stop(session.id, session.meta, reason)
        log.info("session %s stopped: %s", session.id, reason)
        return provider.error(429, reason)


KEY_VARIABLES = {
    "gemini": "GEMINI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY (or ASKBOX_OPENAI_BASE_URL for a self-hosted server)",
}


def daily_message(exc: AllKeysExhausted, settings: GatewaySettings) -> str:
    when = describe_reset(dt.datetime.fromtimestamp(exc.reset_at, dt.UTC))
    keys = f"all {exc.keys} keys" if exc.keys > 1 else "its only key"
    if exc.upstream:
        return (
            f"The Gemini API's requests-per-day quota ({exc.quota_id}) is used up on {keys}; "
            f"it resets at midnight Pacific time, {when}."
        )
    return (
        f"askbox's daily Gemini request limit ({settings.gemini_daily_limit} per key) is used up on "
        f"{keys}; the next request can go at {when}."
    )
