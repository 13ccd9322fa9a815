"""``--quick``, shared by every bench: tiny counts and no timing claims.

A bench is a script people run rarely, so it rots quietly (an import renamed under it, a
fixture changed). ``--quick`` runs the same code end to end with the smallest counts that
exercise every path, and the test suite runs each bench that way
(tests/integration/test_benches.py): a bench that no longer starts fails the suite. Its
numbers mean nothing; the script says so on its first line.
"""

from __future__ import annotations

import argparse
from typing import Any


def parse_args(parser: argparse.ArgumentParser, **quick: Any) -> argparse.Namespace:
    """``parser``'s arguments, with ``quick``'s values in place when ``--quick`` is given."""
    parser.add_argument(
        "--quick", action="store_true", help="tiny counts, no timing claims: proves the bench still runs end to end"
    )
    args = parser.parse_args()
    if args.quick:
        for name, value in quick.items():
            setattr(args, name, value)
        print("--quick: tiny counts; the numbers below mean nothing", flush=True)
    return args
