"""How the CLI speaks: one line on stderr per message, prefixed ``askbox:``."""

from __future__ import annotations

import sys


def err(message: str) -> None:
    print(f"askbox: {message}", file=sys.stderr, flush=True)
