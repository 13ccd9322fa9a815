"""The ``askbox`` command line: one module per command group, thin over jobs/ and sandbox/.

``main`` loads the settings tree once and hands it to the command; a bad setting ends
the process with one line naming the variable to fix.
"""

from __future__ import annotations

import argparse
import re
import sys
from urllib.parse import urlsplit

from pydantic import ValidationError
from pydantic_settings import SettingsError
from redis.exceptions import RedisError

from bot.cli import ask_cmds, doctor_cmds, eval_cmds, feedback_cmds, images_cmds, sandbox_cmds, service_cmds, slack_cmds
from bot.cli.output import err
from jobs.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="askbox", description="Answers questions about code repositories.")
    sub = parser.add_subparsers(dest="group", required=True)
    for group in (sandbox_cmds, ask_cmds, eval_cmds, service_cmds, images_cmds, doctor_cmds, slack_cmds, feedback_cmds):
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args, Settings.load())
    except SettingsError as exc:  # a value that is not even JSON, before validation
        match = re.search(r'field "(\w+)"', str(exc))
        name = f"ASKBOX_{match.group(1).upper()}" if match else "a setting"
        err(f"invalid {name}: not valid JSON ({exc})")
        return 2
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            if exc.title.endswith("Settings") and where.islower():
                where = Settings.variable(exc.title, where)  # name the environment variable to fix
            # A missing field's "input" is every other value given: it may hold secrets.
            # ASKBOX_REPOS is not echoed: its message names the entry, and a URL in it may hold a token;
            # nor is a secret (askbox_secret).
            got = (
                ""
                if error["type"] in ("missing", "askbox_repos", "askbox_secret")
                else f" (got {shown(error.get('input'))})"
            )
            err(f"invalid {where}: {error['msg']}{got}")
        return 2
    except RedisError as exc:  # ask, cancel, worker, gateway, dashboard: Redis is down or refuses us
        err(redis_unreachable(exc))
        return 1
    except Exception as exc:
        from sandbox.errors import SandboxInfraError

        if isinstance(exc, SandboxInfraError):
            err(str(exc))
            return 125
        raise


def shown(value: object, limit: int = 120) -> str:
    """A value as an error message shows it: cut, so a long one (a 100 KB question) is not echoed whole."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def redis_unreachable(exc: RedisError) -> str:
    """One line naming the Redis askbox tried (its password masked) and the fix."""
    try:
        url = Settings.load().redis.redis_url
    except (ValidationError, SettingsError):
        url = "ASKBOX_REDIS_URL"
    parts = urlsplit(url)
    if parts.password:
        url = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (
        f"Redis not reachable at {url} ({detail}): start it (`redis-server --appendonly yes`, or "
        "`docker compose up redis`) or set ASKBOX_REDIS_URL (redis://:PASSWORD@host:6379/0)"
    )


if __name__ == "__main__":
    sys.exit(main())
