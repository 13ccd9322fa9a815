"""The gateway's two HTTP faces (aiohttp): the control API on ``control.sock`` (sessions,
health) and the Gemini API proxy on every session socket."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from jobs.gateway import metrics
from jobs.gateway.breaker import BreakerOpen, RedisBreaker
from jobs.gateway.budgets import over_budget
from jobs.gateway.errors import describe_reset, error_response
from jobs.gateway.keypool import AllKeysExhausted, KeyPool
from jobs.gateway.limiter import LimitTimeout, SharedLimits
from jobs.gateway.meta import SessionMeta
from jobs.gateway.metering import Meter
from jobs.gateway.sessions import AuthError, Session, Sessions
from jobs.gateway.settings import GatewaySettings
from jobs.gateway.upstream import DROP_RESPONSE, Attempts, Upstream, UpstreamRetryable
from jobs.gateway.usage import UsageTracker

log = logging.getLogger(__name__)

_MODEL_PATH = re.compile(r"/models/(?P<model>[^/:]+)(?::(?P<action>[A-Za-z]+))?$")
_GENERATE = {"generateContent", "streamGenerateContent"}


class Gateway:
    """Everything one gateway process holds; the two apps' handlers are its methods."""

    def __init__(self, settings: GatewaySettings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.limits = SharedLimits(redis, settings)
        self.pool = KeyPool(redis, self.limits, settings.api_keys())
        self.breaker = RedisBreaker(redis, "gemini", settings.gateway_breaker_threshold,
                                    settings.gateway_breaker_cooldown)
        self.upstream = Upstream(settings, self.pool, self.breaker)
        self.meter = Meter(redis, settings.gemini_prices)
        self.proxy_runner = web.AppRunner(self.proxy_app(), handle_signals=False, access_log=None)
        self.control_runner = web.AppRunner(self.control_app(), handle_signals=False, access_log=None)
        self.sessions = Sessions(redis, settings.gateway_socket_dir, self.proxy_runner)

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        await self.upstream.start()
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
        await self.upstream.close()
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
        session, token = await self.sessions.open(meta)
        return web.json_response({"id": session.id, "token": token, "socket_dir": str(session.directory)})

    async def close_session(self, request: web.Request) -> web.Response:
        closed = await self.sessions.close(request.match_info["id"])
        return web.json_response({"closed": closed})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "sessions": len(self.sessions),
                                  "breaker": await self.breaker.state(), "keys": len(self.pool.keys)})

    async def refuse_on_control(self, request: web.Request) -> web.Response:
        metrics.REQUESTS.labels("refused_auth").inc()
        return error_response(403, "The askbox gateway's control socket does not serve the Gemini API.")

    # -- the proxy ----------------------------------------------------------------

    def proxy_app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)  # long agent histories
        app.router.add_route("*", "/{tail:.*}", self.proxy)
        return app

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("x-goog-api-key") or request.query.get("key")
        try:
            session = self.sessions.authenticate(request, token)
        except AuthError as exc:
            metrics.REQUESTS.labels("refused_auth").inc()
            return error_response(exc.status, str(exc))
        if session.stop_reason:
            metrics.REQUESTS.labels("refused_stopped").inc()
            return error_response(429, session.stop_reason)
        match = _MODEL_PATH.search(request.path)
        model = match["model"] if match else (session.meta.model or "unknown")
        limited = bool(match and match["action"] in _GENERATE)
        body = await request.read()
        url = self.upstream.url(request.rel_url.raw_path, list(request.query.items()))
        attempts = Attempts()
        started = time.monotonic()
        try:
            upstream = await self.upstream.send(request.method, url, request.headers, body,
                                                limited=limited, attempts=attempts)
        except BreakerOpen as exc:
            metrics.REQUESTS.labels("breaker_open").inc()
            return error_response(503, f"The Gemini API is failing; askbox paused calls to it "
                                       f"(retry in {exc.retry_in:.0f} s).", retry_after=exc.retry_in)
        except LimitTimeout as exc:
            metrics.REQUESTS.labels("wait_timeout").inc()
            return error_response(429, f"askbox's shared Gemini rate limit is saturated: waited "
                                       f"{exc.waited:.0f} s for a turn.", retry_after=5.0)
        except AllKeysExhausted as exc:
            metrics.REQUESTS.labels("daily_quota").inc()
            return await self._stop(session, daily_message(exc, self.settings))
        except UpstreamRetryable as exc:
            metrics.REQUESTS.labels("upstream_error").inc()
            if exc.status == 0:
                return error_response(502, "The Gemini API could not be reached after retries.")
            headers = {k: v for k, v in exc.headers.items() if k.lower() not in DROP_RESPONSE}
            return web.Response(status=exc.status, body=exc.body, headers=headers)
        metrics.WAIT.observe(time.monotonic() - started)
        return await self._relay(request, session, upstream, model, attempts)

    async def _relay(self, request: web.Request, session: Session, upstream: aiohttp.ClientResponse,
                     model: str, attempts: Attempts) -> web.StreamResponse:
        """Stream the upstream answer through chunk by chunk, metering it as it passes."""
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in DROP_RESPONSE}
        response = web.StreamResponse(status=upstream.status, headers=headers)
        tracker = UsageTracker(sse="text/event-stream" in upstream.headers.get("content-type", ""))
        outcome = "ok" if upstream.status < 400 else f"upstream_{upstream.status}"
        metered = False
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                tracker.feed(chunk)
                await response.write(chunk)  # no buffering: first-token latency unchanged
            # Metered before the stream's end reaches the agent, so a budget crossed by this
            # answer refuses the agent's very next request.
            metered = True
            await self._meter(session, model, tracker, attempts, upstream.status)
            await response.write_eof()
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
            # Mid-stream: the status line is out, so no retry; the agent sees a cut stream.
            outcome = "cut"
            log.warning("stream of session %s cut: %r", session.id, exc)
        finally:
            upstream.release()
            metrics.REQUESTS.labels(outcome).inc()
            if not metered:  # what streamed before a cut was still paid for
                await self._meter(session, model, tracker, attempts, upstream.status)
        return response

    async def _meter(self, session: Session, model: str, tracker: UsageTracker, attempts: Attempts,
                     status: int) -> None:
        if status >= 400:
            return  # an error answer carries no usage
        usage = tracker.usage()
        if usage is not None and attempts.key is not None:
            await self.limits.charge(attempts.key.id, usage.total)
        totals = await self.meter.record(session.id, session.meta, model, usage, attempts.waited,
                                         attempts.absorbed_429)
        reason = over_budget(self.settings, session.meta, totals)
        if reason:
            await self._stop(session, reason)

    async def _stop(self, session: Session, reason: str) -> web.Response:
        """End the session: every later request is refused, the worker reads why."""
        session.stop_reason = session.stop_reason or reason
        await self.meter.stop(session.id, session.meta, reason)
        log.info("session %s stopped: %s", session.id, reason)
        return error_response(429, reason)


def daily_message(exc: AllKeysExhausted, settings: GatewaySettings) -> str:
    when = describe_reset(dt.datetime.fromtimestamp(exc.reset_at, dt.timezone.utc))
    keys = f"all {exc.keys} keys" if exc.keys > 1 else "its only key"
    if exc.upstream:
        return (f"The Gemini API's requests-per-day quota ({exc.quota_id}) is used up on {keys}; "
                f"it resets at midnight Pacific time, {when}.")
    return (f"askbox's daily Gemini request limit ({settings.gemini_daily_limit} per key) is used up on "
            f"{keys}; the next request can go at {when}.")
