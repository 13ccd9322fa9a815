"""askbox's Slack app manifest (``askbox slack manifest``): set-up in one step.

Declared as an agent (``features.agent_view``; Slack no longer accepts ``assistant_view``
for new apps), with App Home's Home and Messages tabs, ``/askbox``, the message shortcut,
interactivity, and exactly the bot events and scopes the code uses: the events are
bot/app.py's ``BOT_EVENTS``, and tests/unit/test_slack_manifest.py derives the scopes
from the Slack methods and events the code calls (the method descriptions in
tests/fixtures/slack-api name them) and fails when ``SCOPES`` lacks one or holds one
nobody uses. Socket Mode by default; ``--http URL`` sets the request URLs instead.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from bot.app import BOT_EVENTS
from bot.commands import COMMAND
from bot.shortcut import CALLBACK

NAME = "askbox"
CREATE_URL = "https://api.slack.com/apps?new_app=1&manifest_json="

# Every bot scope, with the calls that need it (the unit test checks both directions).
SCOPES: dict[str, str] = {
    "app_mentions:read": "app_mention events",
    "assistant:write": "assistant.threads.setSuggestedPrompts (the Messages tab's prompts)",
    "channels:history": "message.channels (follow-ups), conversations.replies (finding our own posts)",
    "chat:write": "chat.* posts, edits and streams, agents.sessions.*, assistant.threads.setStatus",
    "commands": "/askbox and the message shortcut",
    "files:write": "answer.md for very long answers",
    "groups:history": "message.groups, conversations.replies in private channels",
    "im:history": "message.im (the Messages tab), conversations.replies in DMs",
    "mpim:history": "message.mpim, conversations.replies in group DMs",
    "reactions:write": "the eyes and outcome reactions",
}


def manifest(http_url: str | None = None) -> dict[str, Any]:
    """The app manifest: Socket Mode, or HTTP with every request URL ``http_url``."""
    command: dict[str, Any] = {
        "command": COMMAND,
        "description": "Ask about the code, or see what you may ask about",
        "usage_hint": "QUESTION [repo=NAME] | repos | usage | help",
        "should_escape": False,
    }
    events: dict[str, Any] = {"bot_events": list(BOT_EVENTS)}
    interactivity: dict[str, Any] = {"is_enabled": True}
    if http_url:
        command["url"] = events["request_url"] = interactivity["request_url"] = http_url
    return {
        "_metadata": {"major_version": 2, "minor_version": 1},
        "display_information": {
            "name": NAME,
            "description": "Answers questions about your code, from a coding agent in a locked-down sandbox.",
            "background_color": "#1f2933",
        },
        "features": {
            "app_home": {
                "home_tab_enabled": True,
                "messages_tab_enabled": True,
                "messages_tab_read_only_enabled": False,
            },
            "bot_user": {"display_name": NAME, "always_online": True},
            "agent_view": {
                "agent_description": "Ask how your code works: askbox reads the repository at a "
                "pinned commit and answers with links to the lines."
            },
            "slash_commands": [command],
            "shortcuts": [
                {
                    "name": "Ask askbox about this",
                    "type": "message",
                    "callback_id": CALLBACK,
                    "description": "Ask a question about this message (a stack trace, an error)",
                }
            ],
        },
        "oauth_config": {"scopes": {"bot": sorted(SCOPES)}},
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": not http_url,
            "token_rotation_enabled": False,
        },
    }


def create_link(app: dict[str, Any]) -> str:
    """Slack's "create an app from this manifest" link."""
    return CREATE_URL + quote(json.dumps(app, separators=(",", ":")), safe="")
