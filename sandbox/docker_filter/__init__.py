"""``askbox docker-filter``: the worker's only way to Docker, a socket proxy with a policy.

The Docker socket is root on the host: whoever holds it can start a privileged container
with ``/`` mounted. The filter listens on a Unix socket of its own, hands the worker
that socket instead, and forwards to the real one only the calls askbox's worker makes
(``policy.py``), with every ``POST /containers/create`` body checked field by field
against what ``sandbox/runner.py`` and ``sandbox/egress.py`` create. ``proxy.py`` speaks
HTTP (h11) and relays; ``endpoints.py`` is the filter's own work on the directories
containers bind (sealing snapshots, egress socket directories: sandbox/owned_dirs.py),
``client.py`` the worker's side of it; ``settings.py`` is its section of the settings tree.
"""
