"""``askbox images build`` and ``askbox images list``."""

from __future__ import annotations

import argparse
from pathlib import Path

from bot.cli.output import err
from jobs.settings import Settings
from sandbox.agents.settings import AGENT_NAMES


def cmd_build(args: argparse.Namespace, settings: Settings) -> int:
    from docker.errors import ImageNotFound

    from sandbox import images
    from sandbox.runner import Sandbox

    client = Sandbox().client
    # Images that need the internet (agent-cursor) are built when named, or when building
    # everything with a registry in reach; a build-everything that cannot get them says so
    # in one line and goes on: the service runs without them (the Gemini agent answers).
    names = args.names or [n for n, d in images.IMAGES.items() if not (args.offline and d.needs_internet)]
    if args.offline and not args.names:
        for name in [n for n in images.IMAGES if n not in names]:
            err(f"skipping {name} offline: {images.IMAGES[name].needs_internet}")
    if not args.names:  # an agent image the settings replace (ASKBOX_CURSOR_IMAGE, ...) is not needed
        replaced = {f"agent-{agent}": settings.agents.section(agent).image for agent in AGENT_NAMES}
        for name, image in replaced.items():
            if image and name in names:
                names.remove(name)
                err(f"skipping {name}: ASKBOX_{name[6:].upper()}_IMAGE={image} is used instead")
    if not args.names and "agent-cursor" in names and settings.agents.cursor.api_key is None:
        # Without its key the cursor agent cannot answer (the worker answers with another), so
        # its image, which needs Cursor's download servers, is not tried on every `up`.
        names.remove("agent-cursor")
        err(
            "skipping agent-cursor: CURSOR_API_KEY is not set (the cursor agent needs it); "
            "`askbox images build agent-cursor` builds it anyway"
        )
    base = args.base
    try:
        if args.offline and base is None:
            base = images.OFFLINE_BASE
            try:
                present = bool(client.images.get(base))
            except ImageNotFound:
                present = False
            if args.rebuild_base or not present:
                images.build_offline_base(client, err, mirror=settings.sandbox.debian_mirror)
        else:
            base = images.resolve_base(client, base, err)
        optional = [] if args.names else [n for n in names if images.IMAGES[n].needs_internet]
        required = [n for n in names if n not in optional]
        for built in images.build(
            client, required, base, err, extra_ca_dir=args.extra_ca_dir, missing_only=args.missing
        ):
            print(built, flush=True)
        for name in optional:  # their parents were built just above
            try:
                for built in images.build(client, [name], base, err, extra_ca_dir=args.extra_ca_dir, missing_only=True):
                    print(built, flush=True)
            except RuntimeError:
                err(
                    f"{name} not built: {images.IMAGES[name].needs_internet}, which are not reachable from "
                    "here. Questions use the Gemini agent (set ASKBOX_AGENT=gemini); build it where they are "
                    f"reachable (`askbox images build {name}`) or set ASKBOX_CURSOR_IMAGE to a copy built elsewhere."
                )
    except (RuntimeError, ValueError) as exc:
        err(str(exc))
        return 1
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from sandbox import images
    from sandbox.runner import Sandbox

    client = Sandbox().client
    for name in images.IMAGES:
        state = "present" if images.exists(client, name) else "missing"
        print(f"{images.tag(name)}\t{state}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    imgs = sub.add_parser("images", help="build and list askbox's images").add_subparsers(dest="action", required=True)
    build = imgs.add_parser("build", help="build the images (all by default)")
    build.add_argument("names", nargs="*", help="images to build (and their parents)")
    build.add_argument("--offline", action="store_true", help="no registry: debootstrap a local base")
    build.add_argument("--base", help="base image instead of debian:trixie-slim")
    build.add_argument("--rebuild-base", action="store_true", help="redo the offline base")
    build.add_argument("--missing", action="store_true", help="only images whose tag is not built yet")
    build.add_argument(
        "--extra-ca-dir",
        type=Path,
        default=Path("/usr/local/share/ca-certificates"),
        help="CA certificates (*.crt) the images must trust, e.g. a TLS-inspecting proxy's",
    )
    build.set_defaults(func=cmd_build)
    imgs.add_parser("list", help="the expected tags and whether they are built").set_defaults(func=cmd_list)
