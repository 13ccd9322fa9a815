"""``python -m jobs.gateway``: one model gateway for this host, configured from the environment."""

from __future__ import annotations

import sys

from jobs.gateway.serve import main
from jobs.gateway.settings import GatewaySettings
from jobs.settings import RedisSettings

if __name__ == "__main__":
    sys.exit(main(GatewaySettings(), RedisSettings().redis_url))
