"""``askbox dashboard``: rq-dashboard behind HTTP basic auth, on loopback only.

It shows the askbox queues, workers, failed jobs and each job's meta (its progress lines
and final outcome). rq-dashboard brings no authentication of its own; every route of the
app built here, static files included, requires the configured user and password.

Two settings of rq-dashboard 0.9 are process-wide (module globals of ``rq_dashboard.web``),
so they are set here for the whole process; askbox stores every job with RQ's
JSONSerializer, never pickle:
- ``rq_dashboard.web.config.serializer``: how job data, meta and results are read;
- the ``Worker`` class its views use, which otherwise reads a busy worker's current job
  with pickle and fails the workers page while a job runs.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, request
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis import Redis
from rq import Worker
from rq.serializers import JSONSerializer
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from jobs.settings import RedisSettings

log = logging.getLogger(__name__)

REALM = "askbox dashboard"
HOST = "127.0.0.1"  # never 0.0.0.0: sandboxes and the network must not reach it


# rq-dashboard's routes that change Redis (its blueprint's endpoint names).
_ACTIONS = frozenset(
    f"rq_dashboard.{name}"
    for name in ("delete_job_view", "requeue_job_view", "requeue_all", "empty_queue", "compact_queue")
)
# Deleting a job, or emptying a registry, drops questions without their final message
# (the asker would wait forever on "Queued"), and a running one's container keeps going.
# Refused rather than re-implemented here: `askbox cancel` already ends a question with one
# final message, and the dashboard then needs neither the Slack token nor write access to
# the questions' final-message keys.
_ENDS_QUESTIONS = frozenset({"rq_dashboard.delete_job_view", "rq_dashboard.empty_queue"})
_NO_DELETE = (
    "deleting jobs from the dashboard is disabled: it would end a question without its "
    "final message. Use `askbox cancel JOB_ID` (the asker is told who cancelled); ended "
    "jobs expire on their own.\n"
)


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASKBOX_", extra="ignore")

    # Empty defaults validated below, rather than plain required fields: pydantic's
    # "missing" error carries every other input as its context, which would include the
    # password when only the user is missing, and the CLI prints that context.
    dashboard_user: str = Field(
        default="",
        validate_default=True,
        description="The dashboard's basic-auth user (required: it never runs without auth).",
    )
    dashboard_password: SecretStr = Field(
        default=SecretStr(""), validate_default=True, description="The dashboard's basic-auth password (required)."
    )
    dashboard_port: int = Field(
        default=9181,
        ge=1,
        le=65535,
        description="Port of `askbox dashboard` on 127.0.0.1 (compose: ASKBOX_DASHBOARD_HOST_PORT instead).",
    )
    # Where users open it, when that is not where it listens: compose publishes it on the
    # host's ASKBOX_DASHBOARD_HOST_PORT, relayed to the container's loopback.
    dashboard_url: str | None = Field(default=None, description="the URL to log for users to open")

    @field_validator("dashboard_user")
    @classmethod
    def _user_set(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("ASKBOX_DASHBOARD_USER must be set: the dashboard never runs without auth")
        return value

    @field_validator("dashboard_password")
    @classmethod
    def _password_set(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("ASKBOX_DASHBOARD_PASSWORD must be set: the dashboard never runs without auth")
        return value


class _JSONWorker(Worker):
    """rq-dashboard lists workers with ``Worker.all(connection)`` and no serializer."""

    @classmethod
    def all(cls, *args: Any, **kwargs: Any) -> list[Any]:
        kwargs.setdefault("serializer", JSONSerializer)
        return super().all(*args, **kwargs)


def _use_json_serializer() -> None:
    from rq_dashboard import web

    web.config.serializer = JSONSerializer
    web.Worker = _JSONWorker


def _use_connection(redis: Redis) -> None:
    """rq-dashboard connects from its URL setting (redis_sentinel_url's ``connect``), and
    again on every request to a page with an instance number (all of them). Handed our
    client instead, it goes where every askbox process goes (RedisSettings.client():
    Sentinel when configured, the same retries across a failover), on one pool."""
    from rq_dashboard import web

    web.from_url = lambda *args, **kwargs: (None, redis)


def _same(given: str | None, expected: str) -> bool:
    return hmac.compare_digest((given or "").encode(), expected.encode())


def build_dashboard_app(redis: Redis, username: str, password: str, label: str = "askbox") -> Flask:
    """``label``: the instance name its pages show (never the password)."""
    if not username or not password:
        raise ValueError("the dashboard needs a user and a password")
    import rq_dashboard
    from rq_dashboard.web import setup_rq_connection

    _use_json_serializer()
    _use_connection(redis)
    # rq-dashboard's templates link the favicon through the app's own static endpoint.
    app = Flask(__name__, static_folder=str(Path(rq_dashboard.__file__).parent / "static"))
    app.config.from_object(rq_dashboard.default_settings)
    app.config["RQ_DASHBOARD_REDIS_URL"] = (label,)
    app.config["RQ_DASHBOARD_DISABLE_DELETE"] = True  # hides the buttons; _ENDS_QUESTIONS refuses the routes

    @app.before_request
    def _require_auth() -> Response | None:
        auth = request.authorization
        # Both compared, always: no early exit that would time the user name.
        user_ok = _same(auth.username if auth else None, username)
        password_ok = _same(auth.password if auth else None, password)
        if not (auth and auth.type == "basic" and user_ok and password_ok):
            return Response(
                "authentication required\n",
                401,
                {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
                mimetype="text/plain",
            )
        # Browsers resend cached basic credentials on cross-site requests: an action must
        # be a POST (rq-dashboard also takes a GET for "requeue all", which a link or an
        # <img> on any site could send, with no Origin header), and a POST from another
        # origin is refused.
        if request.endpoint in _ACTIONS and request.method != "POST":
            return Response(
                "actions need a POST from the dashboard itself\n", 405, {"Allow": "POST"}, mimetype="text/plain"
            )
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            if origin and urlsplit(origin).netloc != request.host:
                return Response("cross-origin request refused\n", 403, mimetype="text/plain")
        if request.endpoint in _ENDS_QUESTIONS:
            return Response(_NO_DELETE, 403, mimetype="text/plain")
        return None

    app.register_blueprint(rq_dashboard.blueprint, url_prefix="")
    setup_rq_connection(app)
    return app


class _RequestLog(WSGIRequestHandler):
    """One plain line per request through logging (werkzeug's own adds terminal colours),
    without the query string."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        status = getattr(code, "value", code)
        log.info("%s %s %s", self.command, self.path.split("?", 1)[0], status)


def make_dashboard_server(app: Flask, port: int) -> BaseWSGIServer:
    """A threaded server on 127.0.0.1 (``port`` 0: a free one, see ``.server_port``)."""
    return make_server(HOST, port, app, threaded=True, request_handler=_RequestLog)


def run_dashboard(settings: DashboardSettings, redis_settings: RedisSettings) -> None:
    """Serves until interrupted, with werkzeug's threaded WSGI server.

    No production WSGI server (waitress, gunicorn) is a dependency; for a loopback-only,
    authenticated, few-users admin page werkzeug's threaded server is adequate.
    """
    from redis import RedisError

    redis = redis_settings.client()
    try:
        redis.ping()
    except RedisError as exc:
        # describe(): where, never the password.
        raise RuntimeError(f"dashboard: Redis ({redis_settings.describe()}) unreachable: {exc}") from exc
    app = build_dashboard_app(
        redis, settings.dashboard_user, settings.dashboard_password.get_secret_value(), redis_settings.describe()
    )
    server = make_dashboard_server(app, settings.dashboard_port)
    listening = f"http://{HOST}:{server.server_port}/"
    if settings.dashboard_url and settings.dashboard_url != listening:
        log.info("dashboard on %s (basic auth; listening on %s in this container)", settings.dashboard_url, listening)
    else:
        log.info("dashboard on %s (basic auth)", listening)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
