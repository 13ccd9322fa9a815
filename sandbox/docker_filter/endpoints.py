"""askbox docker-filter's own endpoints, ``POST /askbox/<action>``: the sealing party's work
(sandbox/owned_dirs.py) for a worker that has the directories containers bind read-only.

- ``snapshots/seal`` ``{"root", "slug", "build", "name"}``: move a finished build from the
  worker's staging area to the sealed snapshots, once it is known to be a real directory;
- ``snapshots/remove`` ``{"root", "slug", "name"}``: remove a sealed snapshot;
- ``egress/make`` / ``egress/remove`` ``{"root", "proxy", "run"}``: an egress proxy's
  socket directory (``run`` null) or one run's in it.

``root`` must be the filter's own ``ASKBOX_REPO_SNAPSHOTS`` or ``ASKBOX_EGRESS_SOCKET_DIR``
(a worker configured otherwise is told so), every name must be one askbox makes, and the
functions are the very ones the worker runs itself where it may (one code path).
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from sandbox import owned_dirs
from sandbox.docker_filter.policy import Policy, Refused, parse_json

PREFIX = "/askbox/"


def serve(policy: Policy, method: str, target: str, body: bytes) -> dict[str, Any]:
    """Do one action; its answer, or ``Refused`` with why not."""
    path, _, query = target.partition("?")
    action = path.removeprefix(PREFIX)
    if action not in owned_dirs.ACTIONS:
        raise Refused(f"{path[:100]} is not one of the filter's own endpoints", status=404)
    if method != "POST" or query:
        raise Refused(f"{action}: POST, with a JSON body and no query", status=405)
    function, names = owned_dirs.ACTIONS[action]
    payload = dict(parse_json(body, action))
    unknown = set(payload) - {"root", *names}
    missing = {"root", *names} - set(payload) - {"run"}  # run: null or absent for a proxy's own directory
    if unknown or missing:
        raise Refused(f"{action} takes {', '.join(['root', *names])} (got {', '.join(sorted(payload))})", status=400)
    if not all(value is None or isinstance(value, str) for value in payload.values()):
        raise Refused(f"{action}: every field is a string", status=400)
    root = payload.pop("root")
    roots = policy.snapshot_dirs if action.startswith("snapshots/") else policy.egress_dirs
    if root not in roots:
        raise Refused(
            f"{action}: {str(root)[:200]} is not this filter's directory for it ({', '.join(roots) or 'none'}): "
            "the worker and the filter must have the same ASKBOX_REPO_SNAPSHOTS and ASKBOX_EGRESS_SOCKET_DIR"
        )
    try:
        function(Path(root), **payload)
    except (owned_dirs.BadName, owned_dirs.Unsealable) as exc:
        raise Refused(f"{action}: {exc}") from None
    except FileNotFoundError as exc:
        raise Refused(f"{action}: {exc.filename} does not exist", status=404) from None
    except OSError as exc:
        status = 403 if exc.errno in {errno.ELOOP, errno.ENOTDIR} else 500  # a symlink on the way: refused
        raise Refused(f"{action}: {exc.strerror} ({exc.filename})", status=status) from None
    return {"done": action}
