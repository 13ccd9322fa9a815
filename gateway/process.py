"""Running one gateway process: Redis, the sockets, the TTL sweep, metrics, signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys

from prometheus_client import start_http_server
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.server import Gateway
from gateway.settings import GatewaySettings
from jobs.settings import RedisSettings

log = logging.getLogger("gateway")


def _control_socket_live(path: str) -> bool:
    # asyncio silently replaces an existing socket file; a second gateway on the same
    # directory would steal the first one's control socket, so look before binding.
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


async def _sweep(gateway: Gateway, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            expired = await gateway.sessions.sweep()
            if expired:
                log.info("closed %d expired sessions", len(expired))
        except Exception:
            log.exception("session sweep failed")


async def serve(settings: GatewaySettings, redis_settings: RedisSettings) -> int:
    if not settings.served():
        log.error(
            "no model API key: set GEMINI_API_KEY, ANTHROPIC_API_KEY or OPENAI_API_KEY (or "
            "ASKBOX_OPENAI_BASE_URL for a self-hosted OpenAI-compatible server)"
        )
        return 2
    # Once, without the client's ~20 s of retries (they ride out a failover, not a Redis
    # that was never started): a gateway without Redis says so at once.
    probe = redis_settings.async_client(retry=AsyncRetry(NoBackoff(), 0))
    try:
        await probe.ping()
    except RedisError as exc:
        log.error(
            "Redis (%s) not reachable: %s: start it (`redis-server --appendonly yes`) or set ASKBOX_REDIS_URL",
            redis_settings.describe(),
            exc,
        )
        return 1
    finally:
        await probe.aclose()
    # The process's one pool (Sentinel's when configured): limits, sessions, keys share it.
    redis = redis_settings.async_client()
    directory = settings.gateway_socket_dir
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    directory.chmod(0o755)
    if _control_socket_live(str(settings.control_socket)):
        log.error("another gateway already serves %s", settings.control_socket)
        return 1
    gateway = Gateway(settings, redis)
    await gateway.start()
    if settings.gateway_metrics_port:
        start_http_server(settings.gateway_metrics_port, addr="127.0.0.1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sweeper = asyncio.create_task(_sweep(gateway, settings.gateway_sweep_interval))
    for lane in gateway.lanes.values():
        log.info("provider %s: %d keys, upstream %s", lane.config.name, len(lane.pool.keys), lane.config.base_url)
    log.info("gateway ready on %s", settings.control_socket)
    print(f"gateway ready on {settings.control_socket}", file=sys.stderr, flush=True)
    await stop.wait()
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper
    await gateway.close()
    await redis.aclose()
    return 0


def main(settings: GatewaySettings, redis: RedisSettings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(serve(settings, redis))
