"""``askbox slack manifest`` (the app's manifest, and the link that creates the app) and
``askbox slack check`` (the tokens and their scopes against the manifest's)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bot.cli.output import err
from jobs.settings import Settings

REINSTALL = "reinstall the app from `askbox slack manifest`"


def cmd_manifest(args: argparse.Namespace, settings: Settings) -> int:
    from bot.manifest import create_link, manifest

    if args.http and not args.http.startswith(("https://", "http://")):
        err(f"--http takes the URL Slack posts to, e.g. https://askbox.example.com/slack/events (got {args.http!r})")
        return 2
    app = manifest(args.http)
    print(json.dumps(app, indent=2))
    err(f"create the app from this manifest: {create_link(app)}")
    return 0


def problems(settings: Settings, http: bool) -> tuple[list[str], list[str]]:
    """(problems, what is fine), one line each; every problem names its fix."""
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    from bot.manifest import SCOPES
    from bot.settings import BotSettings

    slack = settings.slack
    found: list[str] = []
    fine: list[str] = []
    if slack.slack_bot_token is None:
        return [
            "SLACK_BOT_TOKEN is not set: copy the Bot User OAuth Token (xoxb-...) from the app's "
            "OAuth & Permissions page"
        ], fine
    client = WebClient(token=slack.slack_bot_token.get_secret_value(), base_url=_base(slack.slack_api_url))
    try:
        auth = client.auth_test()
    except SlackApiError as exc:
        return [
            f"SLACK_BOT_TOKEN is refused by Slack ({exc.response.get('error')}): copy the Bot User OAuth "
            f"Token again, or {REINSTALL}"
        ], fine
    except OSError as exc:
        return [f"Slack's Web API is not reachable ({exc}): check the network, or ASKBOX_SLACK_API_URL"], fine
    fine.append(f"bot token: {auth.get('user')} ({auth.get('user_id')}) in {auth.get('team')} ({auth.get('team_id')})")
    granted = {s.strip() for s in str(_header(auth.headers, "x-oauth-scopes") or "").split(",") if s.strip()}
    for scope in sorted(set(SCOPES) - granted):
        found.append(f"missing scope `{scope}` ({SCOPES[scope]}): {REINSTALL}")
    for scope in sorted(granted - set(SCOPES)):
        fine.append(f"scope `{scope}` is granted but askbox does not use it (harmless)")
    if not http:
        app_token = BotSettings().slack_app_token
        if app_token is None or not app_token.get_secret_value().strip():
            found.append(
                "SLACK_APP_TOKEN is not set: Socket Mode needs an app-level token (xapp-...) with "
                "connections:write (Basic Information, App-Level Tokens), or run the bot with --http"
            )
        else:
            app = WebClient(token=app_token.get_secret_value(), base_url=_base(slack.slack_api_url))
            try:
                app.apps_connections_open(app_token=app_token.get_secret_value())
                fine.append("app token: Socket Mode connections open")
            except SlackApiError as exc:
                found.append(
                    f"SLACK_APP_TOKEN is refused for Socket Mode ({exc.response.get('error')}): create an "
                    "app-level token with connections:write, and turn Socket Mode on (the manifest does)"
                )
    return found, fine


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    found, fine = problems(settings, args.http)
    for line in fine:
        print(f"ok: {line}")
    for line in found:
        print(f"problem: {line}", file=sys.stderr)
    if not found:
        print("ok: askbox's Slack app is set up")
    return 1 if found else 0


def _base(url: str | None) -> str:
    from slack_sdk import WebClient

    base = url or WebClient.BASE_URL
    return base if base.endswith("/") else base + "/"


def _header(headers: Any, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value[0] if isinstance(value, list) else value
    return None


def add_commands(sub: argparse._SubParsersAction) -> None:
    slack = sub.add_parser("slack", help="set up askbox's Slack app: its manifest, and a check of the tokens")
    commands = slack.add_subparsers(dest="slack_command", required=True)
    p = commands.add_parser("manifest", help="print the app manifest (JSON) and the link that creates the app")
    p.add_argument("--http", metavar="URL", help="HTTP mode: the URL Slack posts to (default: Socket Mode)")
    p.set_defaults(func=cmd_manifest)
    p = commands.add_parser("check", help="auth.test, the token's scopes against the manifest's, the app token")
    p.add_argument("--http", action="store_true", help="the bot runs in HTTP mode (no app token to check)")
    p.set_defaults(func=cmd_check)
