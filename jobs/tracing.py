"""OpenTelemetry tracing: one trace per question, across the bot, the queue, the worker's
stages, the sandbox, the gateway's model requests and the Slack posts.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (OpenTelemetry's standard variable,
read into ``TracingSettings``): then each process's entry point calls :func:`setup` and
spans go to ``<endpoint>/v1/traces`` over OTLP/HTTP (protobuf), batched. Off, every
function here is a cheap no-op and the OpenTelemetry SDK is never imported.

The rest of askbox only marks stage boundaries (:func:`span`, :func:`traced`) and carries
the context across processes as a W3C ``traceparent`` carrier (:func:`carrier`): in the
job's meta from the bot to the worker (where :func:`question` picks it up and records the
wait in the queue), and in the gateway session's metadata from the worker to the gateway.

A work-horse is a fork that ends with ``os._exit``: the SDK's batch processor restarts
its thread in the child (``os.register_at_fork``), and :func:`flush` sends what it holds
before the horse exits.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

TRACER = "askbox"
META_KEY = "trace"  # where a job's meta keeps its carrier
F = TypeVar("F", bound=Callable[..., Any])

_provider: Any = None  # the SDK's TracerProvider, once setup() turned tracing on


class TracingSettings(BaseSettings):
    """OpenTelemetry's own variables: tracing is off unless the endpoint is set. The SDK
    also reads the other ``OTEL_*`` variables (``OTEL_EXPORTER_OTLP_HEADERS``...)."""

    model_config = SettingsConfigDict(extra="ignore")

    otel_exporter_otlp_endpoint: str = Field(
        default="",
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/HTTP collector base URL (e.g. http://collector:4318); set: every process exports "
        "one trace per question; empty: no tracing.",
    )
    otel_service_name: str = Field(
        default="",
        validation_alias=AliasChoices("OTEL_SERVICE_NAME"),
        description="The service name on the spans; empty: askbox-bot, askbox-worker, askbox-gateway by process.",
    )


def setup(settings: TracingSettings, process: str) -> bool:
    """Turn tracing on for this process (``process``: "bot", "worker", "gateway"), when an
    endpoint is configured; True if it is on."""
    global _provider
    endpoint = settings.otel_exporter_otlp_endpoint.strip()
    if not endpoint or _provider is not None:
        return _provider is not None
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = settings.otel_service_name or f"askbox-{process}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info("tracing on: spans to %s as %s", endpoint, name)
    return True


def enabled() -> bool:
    return _provider is not None


def _tracer() -> Any:
    from opentelemetry import trace

    return trace.get_tracer(TRACER)


def _context(parent: Mapping[str, str] | None) -> Any:
    from opentelemetry.propagate import extract

    return extract(dict(parent)) if parent else None


@contextlib.contextmanager
def span(
    name: str, attributes: Mapping[str, Any] | None = None, parent: Mapping[str, str] | None = None
) -> Iterator[Any]:
    """A span around a stage: a child of the current span, or of the ``parent`` carrier
    (a context from another process). Yields the span (None when tracing is off), on which
    the stage may set what it learnt (``set_attribute``)."""
    if _provider is None:
        yield None
        return
    clean = {k: v for k, v in (attributes or {}).items() if v is not None}
    with _tracer().start_as_current_span(name, context=_context(parent), attributes=clean) as current:
        yield current


def traced(name: str) -> Callable[[F], F]:
    """A decorator: the function's call is a span of that name."""

    def wrap(function: F) -> F:
        @functools.wraps(function)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with span(name):
                return function(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def carrier() -> dict[str, str]:
    """The current context as a W3C carrier (``traceparent``), for another process; empty
    when tracing is off or no span is open."""
    if _provider is None:
        return {}
    from opentelemetry.propagate import inject

    found: dict[str, str] = {}
    inject(found)
    return found


def _nanos(moment: dt.datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # RQ stores naive UTC
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1e9)


@contextlib.contextmanager
def question(
    meta: Mapping[str, Any], job_id: str, enqueued: dt.datetime | None, started: dt.datetime | None
) -> Iterator[Any]:
    """The worker's span of one question, continuing the trace its job's meta carries, with
    the time it waited in the queue as a span of its own (enqueued to started)."""
    if _provider is None:
        yield None
        return
    parent = _context(meta.get(META_KEY) or None)
    begin, end = _nanos(enqueued), _nanos(started)
    if begin is not None and end is not None:
        _tracer().start_span(
            "askbox.queue.wait", context=parent, start_time=begin, attributes={"askbox.job": job_id}
        ).end(end_time=end)
    with _tracer().start_as_current_span(
        "askbox.question", context=parent, attributes={"askbox.job": job_id}
    ) as current:
        yield current


def flush(timeout_millis: int = 5000) -> None:
    """Send the spans held so far (a work-horse exits without running atexit hooks)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis)
