"""``askbox sandbox run`` and ``askbox sandbox reap``: the sandbox policy without an agent."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bot.cli.output import err
from jobs.settings import Settings


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from sandbox import SandboxSpec, images
    from sandbox.factory import sandbox_from_settings
    from sandbox.spec import Limits

    section = settings.sandbox
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        err("sandbox run: give the command after --, e.g. askbox sandbox run -- ls -la")
        return 2
    overrides = {"timeout": args.timeout, "cpus": args.cpus, "memory": args.memory}
    # Validated like the settings: --timeout -1 or --memory lots is refused, not run.
    limits = Limits.model_validate(
        {**section.limits().model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
    )
    spec = SandboxSpec(
        image=args.image or images.tag("sandbox"),  # what every agent image is built on; builds offline
        command=command,
        repo=args.repo,
        limits=limits,
        egress_allow=section.egress_entries(),
        runtime=section.sandbox_runtime,
    )
    from bot.cli.signals import cancel_on_termination

    cancel_on_termination()  # SIGTERM/SIGHUP cancel the run and remove its container, as Ctrl-C does
    box = sandbox_from_settings(section)
    try:
        run = box.run(spec)
    except KeyboardInterrupt:  # while starting: the runner removed what it had made
        box.release_egress(spec)
        err(f"sandbox {spec.run_id} cancelled before it started")
        return 130
    with run:
        try:
            for line in run:
                out = sys.stdout if line.stream == "stdout" else sys.stderr
                print(line.text + (" [truncated]" if line.truncated else ""), file=out, flush=True)
        except KeyboardInterrupt:
            run.cancel()
    box.release_egress(spec)
    assert run.outcome is not None
    err(f"sandbox {spec.run_id} {run.outcome.describe()}")
    return run.outcome.cli_exit_code()


def cmd_reap(args: argparse.Namespace, settings: Settings) -> int:
    from sandbox.reaper import reap
    from sandbox.runner import Sandbox

    removed = reap(Sandbox().client, deployment=settings.sandbox.deployment, grace=args.grace)
    err(f"reaped {len(removed)} sandbox container(s)" + (f": {', '.join(removed)}" if removed else ""))
    return 0


def cmd_cleanup(args: argparse.Namespace, settings: Settings) -> int:
    from sandbox.factory import sandbox_from_settings
    from sandbox.reaper import remove_deployment

    section = settings.sandbox
    if args.deployment:
        section = section.model_copy(update={"deployment": args.deployment})
    box = sandbox_from_settings(section)
    sandboxes = remove_deployment(box.client, section.deployment)
    proxies = box.egress.stop_all(box.client) if box.egress is not None else 0
    err(
        f"deployment {section.deployment}: removed {len(sandboxes)} sandbox container(s) and {proxies} egress "
        f"proxy(ies) of {section.egress_socket_dir}"
    )
    if args.host_dirs:
        for folder in host_dirs(settings):
            print(folder, flush=True)
    return 0


# The host folders compose bind-mounts at the same path (compose.yaml PATHS), at their
# defaults: each is listed as its parent, which Docker made for it and nothing else uses.
DEFAULT_HOST_DIRS = {
    Path("/run/askbox/gateway"): Path("/run/askbox"),
    Path("/run/askbox/egress"): Path("/run/askbox"),
    Path("/var/lib/askbox/snapshots"): Path("/var/lib/askbox"),
}


def host_dirs(settings: Settings) -> list[Path]:
    """The folders the sockets and snapshots live in, for `xargs rm -rf` once compose is
    down (the README's clean-up): the gateway's and egress proxies' socket folders and the
    snapshots'."""
    found: list[Path] = []
    for folder in (
        settings.gateway.gateway_socket_dir,
        settings.sandbox.egress_socket_dir,
        settings.jobs.repo_snapshots,
    ):
        folder = DEFAULT_HOST_DIRS.get(folder, folder)
        if folder not in found:
            found.append(folder)
    return found


def add_commands(sub: argparse._SubParsersAction) -> None:
    sandbox = sub.add_parser("sandbox", help="run commands under the sandbox policy").add_subparsers(
        dest="action", required=True
    )
    run = sandbox.add_parser("run", help="run a command exactly as jobs run agents")
    run.add_argument("--repo", type=Path, help="directory mounted read-only at /workspace")
    run.add_argument("--image", help="image (default: askbox's sandbox image, the agents' base)")
    run.add_argument("--timeout", type=float, help="wall-clock deadline in seconds")
    run.add_argument("--memory", help="memory limit, e.g. 512m (swap is the same)")
    run.add_argument("--cpus", type=float, help="CPU quota in cores")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    run.set_defaults(func=cmd_run)
    reap = sandbox.add_parser("reap", help="remove sandbox containers whose run is dead")
    reap.add_argument("--grace", type=float, default=60.0, help="seconds past a run's deadline")
    reap.set_defaults(func=cmd_reap)
    cleanup = sub.add_parser(
        "cleanup", help="remove every sandbox and egress proxy of this deployment (when none of its workers runs)"
    )
    cleanup.add_argument("--deployment", help="default: ASKBOX_DEPLOYMENT")
    cleanup.add_argument(
        "--host-dirs",
        action="store_true",
        help="also print the host folders of the sockets and snapshots, one a line, to remove "
        "once the services are down",
    )
    cleanup.set_defaults(func=cmd_cleanup)
