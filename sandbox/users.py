"""The unprivileged users askbox's containers run as (their images create them).

One place, so that the runner, the egress proxies and askbox docker-filter (which pins
every container to exactly these) agree.
"""

SANDBOX_UID = 10001  # images/sandbox and the agent images: the agent's user
SANDBOX_USER = f"{SANDBOX_UID}:{SANDBOX_UID}"
PROXY_UID = 10002  # images/egress-proxy: Squid's user
PROXY_USER = f"{PROXY_UID}:{PROXY_UID}"
