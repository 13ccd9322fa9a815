"""The images askbox runs, their versioned tags, and how to build them with or without a registry.

A tag is ``<askbox version>-<digest of the image's build files and its parent's tag>``:
change a Dockerfile and every dependent tag changes, so a worker never runs a stale
image unknowingly (it finds the new tag missing and says how to build it).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Docker is imported where images are built: tags alone need no Docker
    import docker

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"
OFFLINE_BASE = "askbox/debian-base:trixie"
DEFAULT_EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")


@dataclass(frozen=True)
class ImageDef:
    name: str
    parent: str | None = None  # another ImageDef's name, passed as SANDBOX_IMAGE
    needs_internet: str = ""  # why it cannot be built offline, if it cannot


IMAGES: dict[str, ImageDef] = {
    d.name: d
    for d in (
        ImageDef("sandbox"),
        ImageDef("egress-proxy"),
        ImageDef("agent-gemini", parent="sandbox"),
        ImageDef("agent-claude", parent="sandbox"),
        ImageDef("agent-codex", parent="sandbox"),
        ImageDef(
            "agent-cursor",
            parent="sandbox",
            needs_internet="cursor-agent is only distributed from Cursor's download servers",
        ),
    )
}


def version() -> str:
    try:
        return importlib.metadata.version("askbox")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def _digest(directory: Path, parent_tag: str | None) -> str:
    h = hashlib.sha256((parent_tag or "").encode())
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(path.relative_to(directory).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:10]


def tag(name: str, images_dir: Path = IMAGES_DIR) -> str:
    definition = IMAGES[name]
    parent = tag(definition.parent, images_dir) if definition.parent else None
    return f"askbox/{name}:{version()}-{_digest(images_dir / name, parent)}"


def build_order(names: list[str]) -> list[str]:
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in IMAGES:
            raise ValueError(f"unknown image {name!r}; known: {', '.join(IMAGES)}")
        parent = IMAGES[name].parent
        if parent:
            visit(parent)
        if name not in order:
            order.append(name)

    for name in names:
        visit(name)
    return order


def debian_mirror(configured: str | None = None) -> str:
    """The Debian archive to debootstrap from: ``configured`` (ASKBOX_DEBIAN_MIRROR) when
    given, else the one this host's apt already uses (its Debian "main" index, security
    archive excluded), so a machine behind a mirror or proxy builds from what it trusts and
    no archive's host name is written into askbox."""
    if configured:
        return configured
    query = [
        "apt-get",
        "indextargets",
        "--format",
        "$(REPO_URI)",
        "Origin: Debian",
        "Label: Debian",
        "Identifier: Packages",
        "Component: main",
    ]
    try:
        found = subprocess.run(query, capture_output=True, text=True, timeout=60, check=False).stdout.split()
    except (FileNotFoundError, subprocess.TimeoutExpired):
        found = []
    if not found:
        raise RuntimeError(
            "no Debian archive to debootstrap from: this host's apt configuration names none "
            "(`apt-get indextargets`; run `apt-get update` first), so set ASKBOX_DEBIAN_MIRROR "
            "to a Debian mirror's URL"
        )
    return found[0]


def build_offline_base(
    client: docker.DockerClient, log: Callable[[str], None], suite: str = "trixie", mirror: str | None = None
) -> str:
    """debootstrap a minimal Debian and import it: a base image without any registry."""
    if shutil.which("debootstrap") is None:
        raise RuntimeError("offline builds need debootstrap: apt-get install -y debootstrap")
    archive = debian_mirror(mirror)
    with tempfile.TemporaryDirectory(prefix="askbox-base-") as root:
        log(f"debootstrap --variant=minbase {suite} from {archive} (about a minute)")
        subprocess.run(
            ["debootstrap", "--variant=minbase", suite, root, archive],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        client.api.import_image_from_stream(tar.stdout, repository=OFFLINE_BASE.split(":")[0], tag=suite)
        if tar.wait() != 0:
            raise RuntimeError("tar of the debootstrap tree failed")
    log(f"imported {OFFLINE_BASE}")
    return OFFLINE_BASE


DEFAULT_BASE = "debian:trixie-slim"


class NoRegistry(RuntimeError):
    """The base image is not here and no registry could be reached to pull it."""


def resolve_base(client: docker.DockerClient, base: str | None, log: Callable[[str], None]) -> str:
    """The base to build from: ``base`` (default debian:trixie-slim) when present or
    pullable; without a registry, the offline base when it exists, said in one line;
    otherwise ``NoRegistry`` with one line naming the fix, instead of Docker's raw
    "lookup <the registry's host> … no such host" in the middle of a build log."""
    from docker.errors import APIError, ImageNotFound

    wanted = base or DEFAULT_BASE
    if present(client, wanted):
        return wanted
    try:
        client.images.pull(wanted)
        return wanted
    except (APIError, ImageNotFound) as exc:
        reason = str(getattr(exc, "explanation", None) or exc).strip().splitlines()[0]
    if base is None and present(client, OFFLINE_BASE):
        log(f"cannot pull {wanted} ({reason}); building from the local offline base {OFFLINE_BASE}")
        return OFFLINE_BASE
    raise NoRegistry(
        f"cannot pull the base image {wanted}: no container registry reachable ({reason}). "
        "Build offline with `askbox images build --offline` (debootstrap a local Debian base; "
        "apt-get install debootstrap), or pass --base IMAGE with a base already on this host."
    )


def _context(name: str, extra_ca_dir: Path, into: Path) -> Path:
    if not (IMAGES_DIR / name / "Dockerfile").is_file():
        raise RuntimeError(f"no Dockerfile at {IMAGES_DIR / name}: is this a complete askbox checkout?")
    context = into / name
    shutil.copytree(IMAGES_DIR / name, context)
    ca = context / "extra-ca"
    ca.mkdir(exist_ok=True)
    if extra_ca_dir.is_dir():
        for cert in extra_ca_dir.rglob("*.crt"):
            shutil.copy(cert, ca / cert.name)
    return context


def build(
    client: docker.DockerClient,
    names: list[str],
    base: str | None,
    log: Callable[[str], None],
    extra_ca_dir: Path = DEFAULT_EXTRA_CA_DIR,
    missing_only: bool = False,
) -> list[str]:
    """Build ``names`` (and their parents) from ``base``; return the tags built.

    ``missing_only`` skips images whose tag is already here: a tag is a digest of the
    image's build files and its parent's tag, so an existing one is up to date."""
    built = []
    with tempfile.TemporaryDirectory(prefix="askbox-build-") as tmp:
        for name in build_order(names):
            image_tag = tag(name)
            if missing_only and present(client, image_tag):
                log(f"{image_tag} is already built")
                continue
            buildargs = {"BASE": base} if base else {}
            parent = IMAGES[name].parent
            if parent:
                buildargs["SANDBOX_IMAGE"] = tag(parent)
            log(f"building {image_tag}")
            context = _context(name, extra_ca_dir, Path(tmp))
            from docker.errors import BuildError

            try:
                # forcerm: a failed step's container goes too (rm alone keeps it: one exited
                # container per failed build, e.g. agent-cursor where Cursor is unreachable).
                _, _log = client.images.build(
                    path=str(context), tag=image_tag, buildargs=buildargs, rm=True, forcerm=True
                )
            except BuildError as exc:
                lines = [c.get("stream", c.get("error", "")) for c in exc.build_log if isinstance(c, dict)]
                tail = "".join(lines).strip().splitlines()[-15:]
                ours = [line for line in tail if line.startswith("askbox:")]  # our Dockerfiles' own words
                tail = ours or tail
                hint = f" ({IMAGES[name].needs_internet})" if IMAGES[name].needs_internet else ""
                raise RuntimeError(f"building {image_tag} failed{hint}:\n" + "\n".join(tail)) from exc
            built.append(image_tag)
    return built


def exists(client: docker.DockerClient, name: str) -> bool:
    return present(client, tag(name))


def present(client: docker.DockerClient, image: str) -> bool:
    """Whether the daemon has ``image`` (any name:tag, e.g. ASKBOX_CURSOR_IMAGE)."""
    from docker.errors import ImageNotFound

    try:
        client.images.get(image)
    except ImageNotFound:
        return False
    return True
