"""The worker's side of askbox docker-filter's own endpoints (``POST /askbox/<action>``).

What the worker may not do to the directories containers bind (sandbox/owned_dirs.py:
seal a snapshot, remove one, make or remove an egress socket directory), it asks the
filter to do, on the socket it reaches Docker by (``DOCKER_HOST``). docker-py's API client
is used for the connection because it already speaks every form ``DOCKER_HOST`` takes.
"""

from __future__ import annotations

import docker
import requests
from docker.utils import kwargs_from_env

from sandbox.errors import FILTER_PREFIX, SandboxInfraError

TIMEOUT = 120  # seconds: removing a large snapshot takes a while


def ask_filter(action: str, payload: dict[str, str | None], because: OSError) -> None:
    """Have the filter run ``action``; raises SandboxInfraError with why not."""
    here = f"{because.strerror or because} ({because.filename or payload.get('root')})"
    api = docker.APIClient(version="1.41", timeout=int(TIMEOUT), **kwargs_from_env())
    try:
        response = api.post(f"{api.base_url}/askbox/{action}", json=payload, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise SandboxInfraError(
            f"cannot {action} here: {here}; askbox docker-filter could not be asked: {exc}"
        ) from None
    finally:
        api.close()
    if response.status_code == 200:
        return
    try:
        message = str(response.json().get("message", ""))
    except ValueError:
        message = response.text[:300]
    if not message.startswith(FILTER_PREFIX):
        # The real daemon (404 page not found): this process is not behind the filter.
        raise SandboxInfraError(
            f"cannot {action} here: {here}, and the Docker endpoint is not askbox docker-filter "
            f"(it answered {response.status_code}: {message[:200]}). Run it where it may do this itself (as root, "
            f"with {payload.get('root')} writable), or behind askbox docker-filter (docs/security.md: Docker access through the filter)."
        )
    raise SandboxInfraError(message)
