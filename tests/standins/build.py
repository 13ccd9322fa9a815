"""Build the images of the agent stand-ins, on top of askbox's sandbox image.

The cursor-agent stand-in replays the real recorded transcripts in
``tests/fixtures/cursor-stream/`` (reifying/cursor-hack, MIT) through cursor-agent's
command line; see ``tests/standins/cursor-agent/cursor-agent``.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import docker
from docker.errors import BuildError, ImageNotFound

HERE = Path(__file__).resolve().parent
CURSOR_DIR = HERE / "cursor-agent"
REPOSITORY = "askbox-test/cursor-standin"


def cursor_fixtures_dir() -> Path:
    """The recorded transcripts kept with the tests (copied from ../shared/fixtures)."""
    return HERE.parent / "fixtures" / "cursor-stream"


def cursor_transcripts() -> dict[str, Path]:
    """Transcript name -> recorded .jsonl file."""
    return {p.stem: p for p in sorted(cursor_fixtures_dir().glob("*.jsonl"))}


def _context_files() -> dict[str, Path]:
    """Path inside the build context -> source file."""
    fixtures = cursor_fixtures_dir()
    files = {
        "Dockerfile": CURSOR_DIR / "Dockerfile",
        "cursor-agent": CURSOR_DIR / "cursor-agent",
    }
    for path in sorted(fixtures.glob("*.jsonl")):
        files[f"transcripts/{path.name}"] = path
    if (fixtures / "LICENSE").is_file():  # MIT: the notice travels with the recordings
        files["transcripts/LICENSE"] = fixtures / "LICENSE"
    return files


def cursor_standin_tag(sandbox_image: str) -> str:
    digest = hashlib.sha256(sandbox_image.encode())
    for name, source in sorted(_context_files().items()):
        digest.update(b"\0" + name.encode() + b"\0" + source.read_bytes())
    return f"{REPOSITORY}:{digest.hexdigest()[:16]}"


def build_cursor_standin(client: docker.DockerClient, sandbox_image: str) -> str:
    """Build (unless already built) the cursor-agent stand-in on ``sandbox_image``;
    returns its tag, which changes whenever the script, Dockerfile, a transcript or the
    base image changes."""
    tag = cursor_standin_tag(sandbox_image)
    try:
        client.images.get(tag)
        return tag
    except ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="cursor-standin-") as tmp:
        context = Path(tmp)
        for name, source in _context_files().items():
            target = context / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            target.chmod(0o755 if name == "cursor-agent" else 0o644)
        try:
            client.images.build(
                path=str(context),
                tag=tag,
                buildargs={"SANDBOX_IMAGE": sandbox_image},
                rm=True,
                forcerm=True,
                pull=False,
            )
        except BuildError as exc:
            log = "".join(str(chunk.get("stream") or chunk.get("error") or "") for chunk in exc.build_log)
            raise RuntimeError(f"building {tag} failed: {exc}\n{log[-4000:]}") from exc
    return tag
