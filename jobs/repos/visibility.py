"""Whether a configured local repository can be seen where the worker runs.

Under compose the worker sees one host folder of repositories, ``ASKBOX_REPOS_DIR``,
mounted at the same path inside its container; a repository configured elsewhere does
not exist there, and "does not exist" alone sends the user looking for a typo. The
comparison is of paths as written (normalised, not resolved): the worker resolves a
symlink inside its container, where it may lead somewhere else than on the host.
"""

from __future__ import annotations

import os
from pathlib import Path


def outside(path: Path, repos_dir: Path | None) -> bool:
    """Whether ``path`` lies outside ``repos_dir`` (never, when no folder is configured)."""
    if repos_dir is None:
        return False
    folder, target = os.path.normpath(repos_dir), os.path.normpath(path)
    return os.path.commonpath([folder, target]) != folder


def unseen(name: str, path: Path, repos_dir: Path | None) -> str | None:
    """Why the repository ``name`` at ``path`` cannot be seen here, with the fix, or None."""
    if outside(path, repos_dir):
        return (
            f"repository {name}: {path} is outside ASKBOX_REPOS_DIR ({repos_dir}), the only folder of "
            f"repositories mounted into the worker: move it under {repos_dir}, or set ASKBOX_REPOS_DIR to "
            "the folder that holds it"
        )
    if not path.exists():
        return f"repository {name}: {path} does not exist here: clone it there, or fix its path in ASKBOX_REPOS"
    return None
