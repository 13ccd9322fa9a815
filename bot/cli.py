"""The ``askbox`` command line."""

from __future__ import annotations

import argparse
import getpass
import re
import sys
import time
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError


def _err(message: str) -> None:
    print(f"askbox: {message}", file=sys.stderr, flush=True)


def cmd_sandbox_run(args: argparse.Namespace) -> int:
    from sandbox import SandboxSpec
    from sandbox.agents.adapters import agent_for
    from sandbox.factory import sandbox_from_settings
    from sandbox.settings import SandboxSettings
    from sandbox.spec import Limits

    settings = SandboxSettings()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        _err("sandbox run: give the command after --, e.g. askbox sandbox run -- ls -la")
        return 2
    overrides = {"timeout": args.timeout, "cpus": args.cpus, "memory": args.memory}
    # Validated like the settings: --timeout -1 or --memory lots is refused, not run.
    limits = Limits.model_validate(
        {**settings.limits().model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
    )
    spec = SandboxSpec(
        image=args.image or agent_for().image(),
        command=command,
        repo=args.repo,
        limits=limits,
        egress_allow=settings.egress_entries(),
        runtime=settings.sandbox_runtime,
    )
    run = sandbox_from_settings(settings).run(spec)
    with run:
        try:
            for line in run:
                out = sys.stdout if line.stream == "stdout" else sys.stderr
                print(line.text + (" [truncated]" if line.truncated else ""), file=out, flush=True)
        except KeyboardInterrupt:
            run.cancel()
    assert run.outcome is not None
    _err(f"sandbox {spec.run_id} {run.outcome.describe()}")
    return run.outcome.cli_exit_code()


def cmd_ask(args: argparse.Namespace) -> int:
    if not args.inline:
        from bot.follow import ask_through_queue

        return ask_through_queue(args)
    from jobs.prompt import build_prompt
    from jobs.repos import UnknownRepo, resolve_repo
    from jobs.settings import JobSettings
    from sandbox.agents.adapters import agent_for
    from sandbox.agents.session import AgentSession, PromptTooLong
    from sandbox.events import AgentError, Result, ToolFinished, ToolStarted
    from sandbox.factory import sandbox_from_settings
    from sandbox.settings import SandboxSettings

    settings = SandboxSettings()
    agent = agent_for(args.agent)
    allow = settings.egress_entries() or None
    try:
        # The same names as the queue (ASKBOX_REPOS), or a directory.
        repo = resolve_repo(args.repo or ".", JobSettings().repos, allow_paths=True)
    except UnknownRepo as exc:
        _err(f"ask: {exc}")
        return 2
    try:
        session = AgentSession(
            sandbox_from_settings(settings),
            agent,
            build_prompt(args.question),
            repo=repo.path,
            model=args.model,
            limits=settings.limits(),
            egress_allow=allow,
        )
    except PromptTooLong as exc:
        _err(f"ask: {exc}")
        return 2
    final = None
    try:
        for event in session.events():
            elapsed = f"[{time.monotonic() - session.started:6.1f}s]"
            if args.json:
                print(event.model_dump_json(), flush=True)
            elif isinstance(event, ToolStarted):
                print(f"{elapsed} {event.summary}", file=sys.stderr, flush=True)
            elif isinstance(event, ToolFinished) and not event.ok:
                detail = f": {event.detail}" if event.detail else ""
                print(f"{elapsed} failed: {event.summary}{detail}", file=sys.stderr, flush=True)
            if isinstance(event, (Result, AgentError)):
                final = event
    except KeyboardInterrupt:
        session.cancel()
        _err("cancelled")
        return 130
    if isinstance(final, Result):
        if not args.json:
            print(final.text, flush=True)
        _err(f"answered by {agent.name}" + (f"/{session.model}" if session.model else "")
             + f" in {time.monotonic() - session.started:.1f} s")
        return 0
    assert isinstance(final, AgentError)
    _err(f"{agent.name} failed ({final.kind}): {final.message}")
    return 1


def cmd_worker(args: argparse.Namespace) -> int:
    from jobs.worker import run_worker

    run_worker(args.queues, burst=args.burst)
    return 0


def cmd_bot(args: argparse.Namespace) -> int:
    from bot.serve import BotConfigError, run_bot
    from jobs.logs import configure_json_logging

    configure_json_logging()
    try:
        run_bot(http=args.http, port=args.port)
    except BotConfigError as exc:
        _err(str(exc))
        return 2
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from bot.dashboard import DashboardSettings, run_dashboard
    from jobs.logs import configure_json_logging

    configure_json_logging()
    settings = DashboardSettings()
    if args.port is not None:
        settings = settings.model_copy(update={"dashboard_port": args.port})
    try:
        run_dashboard(settings)
    except (RuntimeError, OSError) as exc:  # Redis unreachable, port in use
        _err(str(exc))
        return 1
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from redis import Redis

    from jobs.cancel import cancel
    from jobs.settings import JobSettings

    result = cancel(Redis.from_url(JobSettings().redis_url), args.job, by=args.by)
    _err(f"{args.job}: {result}")
    return 0 if result in {"cancelled", "stopping"} else 1


def cmd_sandbox_reap(args: argparse.Namespace) -> int:
    from sandbox.reaper import reap
    from sandbox.runner import Sandbox

    removed = reap(Sandbox().client, grace=args.grace)
    _err(f"reaped {len(removed)} sandbox container(s)" + (f": {', '.join(removed)}" if removed else ""))
    return 0


def cmd_images_build(args: argparse.Namespace) -> int:
    from sandbox import images
    from sandbox.runner import Sandbox

    client = Sandbox().client
    names = args.names or [n for n, d in images.IMAGES.items() if not (args.offline and d.needs_internet)]
    if args.offline and not args.names:
        skipped = [n for n in images.IMAGES if n not in names]
        for name in skipped:
            _err(f"skipping {name} offline: {images.IMAGES[name].needs_internet}")
    base = args.base
    if args.offline and base is None:
        base = images.OFFLINE_BASE
        if args.rebuild_base or not _image_present(client, base):
            images.build_offline_base(client, _err)
    try:
        for built in images.build(client, names, base, _err, extra_ca_dir=args.extra_ca_dir):
            print(built)
    except (RuntimeError, ValueError) as exc:
        _err(str(exc))
        return 1
    return 0


def _image_present(client, name: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(name)
    except ImageNotFound:
        return False
    return True


def cmd_images_list(args: argparse.Namespace) -> int:
    from sandbox import images
    from sandbox.runner import Sandbox

    client = Sandbox().client
    for name in images.IMAGES:
        state = "present" if images.exists(client, name) else "missing"
        print(f"{images.tag(name)}\t{state}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="askbox", description=__doc__)
    sub = parser.add_subparsers(dest="group", required=True)

    sandbox = sub.add_parser("sandbox", help="run commands under the sandbox policy").add_subparsers(
        dest="action", required=True
    )
    run = sandbox.add_parser("run", help="run a command exactly as jobs run agents")
    run.add_argument("--repo", type=Path, help="directory mounted read-only at /workspace")
    run.add_argument("--image", help="image (default: the default agent's image)")
    run.add_argument("--timeout", type=float, help="wall-clock deadline in seconds")
    run.add_argument("--memory", help="memory limit, e.g. 512m (swap is the same)")
    run.add_argument("--cpus", type=float, help="CPU quota in cores")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    run.set_defaults(func=cmd_sandbox_run)
    reap = sandbox.add_parser("reap", help="remove sandbox containers whose run is dead")
    reap.add_argument("--grace", type=float, default=60.0, help="seconds past a run's deadline")
    reap.set_defaults(func=cmd_sandbox_reap)

    ask = sub.add_parser("ask", help="ask a question about a repository")
    ask.add_argument("question")
    ask.add_argument("--repo", help="a name from ASKBOX_REPOS or a directory (default: here)")
    ask.add_argument("--agent", choices=["cursor", "gemini"], help="default: ASKBOX_AGENT or cursor")
    ask.add_argument("--model", help="default: ASKBOX_AGENT_MODEL or the agent's own default")
    ask.add_argument("--inline", action="store_true", help="run in this process, without the queue")
    ask.add_argument("--json", action="store_true", help="print the normalized events as NDJSON")
    ask.add_argument("--thread", help="a conversation name: later questions with it see the earlier ones")
    ask.add_argument("--fresh", action="store_true", help="do not answer from the cache")
    ask.add_argument("--priority", choices=["high", "default", "low"], default="default")
    ask.set_defaults(func=cmd_ask)

    worker = sub.add_parser("worker", help="run a worker answering queued questions")
    worker.add_argument("--queues", nargs="*", help="default: askbox-high askbox-default askbox-low")
    worker.add_argument("--burst", action="store_true", help="stop when the queues are empty")
    worker.set_defaults(func=cmd_worker)

    cancel = sub.add_parser("cancel", help="cancel a queued or running question")
    cancel.add_argument("job")
    cancel.add_argument("--by", default=getpass.getuser(), help="who cancels (shown to the asker)")
    cancel.set_defaults(func=cmd_cancel)

    bot = sub.add_parser("bot", help="the Slack bot (Socket Mode; --http for the Events API)")
    bot.add_argument("--http", action="store_true", help="serve /slack/events instead of Socket Mode")
    bot.add_argument("--port", type=int, default=3000)
    bot.set_defaults(func=cmd_bot)

    dash = sub.add_parser("dashboard", help="rq-dashboard on 127.0.0.1, basic auth from ASKBOX_DASHBOARD_USER/PASSWORD")
    dash.add_argument("--port", type=int, help="default: ASKBOX_DASHBOARD_PORT or 9181")
    dash.set_defaults(func=cmd_dashboard)

    imgs = sub.add_parser("images", help="build and list askbox's images").add_subparsers(
        dest="action", required=True
    )
    build = imgs.add_parser("build", help="build the images (all by default)")
    build.add_argument("names", nargs="*", help="images to build (and their parents)")
    build.add_argument("--offline", action="store_true", help="no registry: debootstrap a local base")
    build.add_argument("--base", help="base image instead of debian:trixie-slim")
    build.add_argument("--rebuild-base", action="store_true", help="redo the offline base")
    build.add_argument(
        "--extra-ca-dir",
        type=Path,
        default=Path("/usr/local/share/ca-certificates"),
        help="CA certificates (*.crt) the images must trust, e.g. a TLS-inspecting proxy's",
    )
    build.set_defaults(func=cmd_images_build)
    imgs.add_parser("list", help="the expected tags and whether they are built").set_defaults(
        func=cmd_images_list
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:  # a value that is not even JSON, before validation
        match = re.search(r'field "(\w+)"', str(exc))
        name = f"ASKBOX_{match.group(1).upper()}" if match else "a setting"
        _err(f"invalid {name}: not valid JSON ({exc})")
        return 2
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            if exc.title.endswith("Settings") and where.islower():
                where = f"ASKBOX_{where.upper()}"  # name the environment variable to fix
            # A missing field's "input" is every other value given: it may hold secrets.
            got = "" if error["type"] == "missing" else f" (got {error.get('input')!r})"
            _err(f"invalid {where}: {error['msg']}{got}")
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: one clear line
        from sandbox.errors import SandboxInfraError

        if isinstance(exc, SandboxInfraError):
            _err(str(exc))
            return 125
        raise


if __name__ == "__main__":
    sys.exit(main())
