"""The long-running processes: ``askbox worker``, ``gateway``, ``bot``, ``dashboard``, ``docker-filter`` (and ``cancel``)."""

from __future__ import annotations

import argparse
import getpass

from bot.cli.output import err
from jobs.settings import Settings


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from jobs import tracing
    from jobs.start_checks import StartCheckFailed
    from jobs.worker import run_worker

    tracing.setup(settings.tracing, "worker")  # before the work-horses fork
    try:
        run_worker(settings, args.queues, burst=args.burst)
    except StartCheckFailed as exc:
        err(f"worker not started: {exc}")
        return 2
    return 0


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.process import main as run_gateway
    from jobs import tracing
    from jobs.logs import configure_json_logging

    configure_json_logging(secrets=settings.secret_values())
    tracing.setup(settings.tracing, "gateway")
    return run_gateway(settings.gateway, settings.redis)


def cmd_bot(args: argparse.Namespace, settings: Settings) -> int:
    from bot.serve import BotConfigError, run_bot
    from bot.settings import BotSettings, HttpBotSettings
    from jobs import tracing
    from jobs.logs import configure_json_logging

    # HTTP mode's settings refuse a missing or empty SLACK_SIGNING_SECRET (main prints
    # the ValidationError as one line naming it, exit 2), before anything listens.
    bot = HttpBotSettings() if args.http else BotSettings()
    configure_json_logging(secrets=settings.secret_values())
    if args.processes < 1 or (args.processes > 1 and not args.http):
        err("--processes takes a number from 1, and only with --http (Socket Mode spreads over connections itself)")
        return 2
    tracing.setup(settings.tracing, "bot")
    try:
        run_bot(settings, bot, port=args.port, processes=args.processes)
    except BotConfigError as exc:
        err(str(exc))
        return 2
    return 0


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    from bot.dashboard import DashboardSettings, run_dashboard
    from jobs.logs import configure_json_logging

    configure_json_logging(secrets=settings.secret_values())
    dashboard = DashboardSettings()
    if args.port is not None:
        dashboard = dashboard.model_copy(update={"dashboard_port": args.port})
    try:
        run_dashboard(dashboard, settings.redis)
    except (RuntimeError, OSError) as exc:  # Redis unreachable, port in use
        err(str(exc))
        return 1
    return 0


def cmd_docker_filter(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from jobs.logs import configure_json_logging
    from sandbox.docker_filter.proxy import DockerFilter

    configure_json_logging(secrets=settings.secret_values())
    section = settings.docker_filter
    try:
        policy = section.policy(
            deployment=settings.sandbox.deployment,
            egress_dir=settings.sandbox.egress_socket_dir,
            snapshot_dir=settings.jobs.repo_snapshots,
            gateway_dir=settings.gateway.gateway_socket_dir,
            # The local directories of ASKBOX_REPOS (one that is not a git checkout is
            # mounted as it is).
            read_only_dirs=[entry.path for entry in settings.jobs.repos.values() if entry.path is not None],
            runtime=settings.sandbox.sandbox_runtime,
        )
    except ValueError as exc:  # a directory sandboxes may bind overlaps one only the filter writes
        err(f"askbox docker-filter not started: {exc}")
        return 2
    server = DockerFilter(
        policy, section.docker_filter_socket, section.docker_filter_upstream, max_body=section.docker_filter_max_body
    )
    try:
        asyncio.run(server.run())
    except OSError as exc:  # the socket's directory not writable, the path too long
        err(f"askbox docker-filter: cannot listen on {section.docker_filter_socket}: {exc}")
        return 1
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from jobs.cancel import cancel

    result = cancel(settings.redis.client(), args.job, by=args.by, slack=settings.slack)
    err(f"{args.job}: {result}")
    return 0 if result in {"cancelled", "stopping"} else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    worker = sub.add_parser("worker", help="run a worker answering queued questions")
    worker.add_argument("--queues", nargs="*", help="default: askbox-high askbox-default askbox-low")
    worker.add_argument("--burst", action="store_true", help="stop when the queues are empty")
    worker.set_defaults(func=cmd_worker)

    gateway = sub.add_parser("gateway", help="the model gateway of this host (agents' LLM traffic, limits, metering)")
    gateway.set_defaults(func=cmd_gateway)

    cancel = sub.add_parser("cancel", help="cancel a queued or running question")
    cancel.add_argument("job")
    cancel.add_argument("--by", default=getpass.getuser(), help="who cancels (shown to the asker)")
    cancel.set_defaults(func=cmd_cancel)

    bot = sub.add_parser("bot", help="the Slack bot (Socket Mode; --http for the Events API)")
    bot.add_argument("--http", action="store_true", help="serve /slack/events instead of Socket Mode")
    bot.add_argument("--port", type=int, default=3000)
    bot.add_argument(
        "--processes",
        type=int,
        default=1,
        help="--http: bot processes serving the one port (the listeners mostly wait on Redis)",
    )
    bot.set_defaults(func=cmd_bot)

    docker_filter = sub.add_parser(
        "docker-filter", help="the worker's Docker socket: forwards only askbox's calls and container settings"
    )
    docker_filter.set_defaults(func=cmd_docker_filter)

    dash = sub.add_parser("dashboard", help="rq-dashboard on 127.0.0.1, basic auth from ASKBOX_DASHBOARD_USER/PASSWORD")
    dash.add_argument("--port", type=int, help="default: ASKBOX_DASHBOARD_PORT or 9181")
    dash.set_defaults(func=cmd_dashboard)
