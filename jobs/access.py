"""Which repositories a question may be about, from where it was asked; and the cache scope.

``ASKBOX_REPO_ACCESS`` (JSON) maps a repository name, or ``"*"`` for every repository
without an entry of its own, to a rule::

    {"secret": {"channels": ["C0SECRET1"], "users": ["U0ALICE01"], "dms": false, "shared": false},
     "*":      {"channels": ["*"], "dms": true}}

- ``channels``: channel ids that may ask about it; ``"*"``: every channel that is not
  shared with another organisation (see ``shared``). Besides these, a channel may
  always ask about its own ``ASKBOX_CHANNEL_REPOS`` entry.
- ``users``: when not empty, only these users may ask about it (in the channels and DMs
  the rule allows).
- ``dms``: direct messages may ask about it.
- ``shared``: Slack Connect — a channel shared with another organisation, or an asker
  from another workspace (the event's ``team`` is not the installation's) — may ask
  about it through ``"*"``. A channel listed by id (or by ``ASKBOX_CHANNEL_REPOS``) is the
  operator's explicit choice and is allowed shared or not.

Anything a rule leaves out is refused. With no rule for a repository and no ``"*"``, the
default fails closed: a repository ``ASKBOX_CHANNEL_REPOS`` gives to a channel is that
channel's (``{}``: no DMs, no other channel), and only a repository bound to no channel
is open to DMs (from this workspace; ``{"dms": true}``). A channel asks about its own
entry and nothing else. Terminal questions (``askbox ask``) are the operator's and may
ask about anything.

The bot refuses before queueing; the worker checks again from the job's origin, since a
job written straight into Redis never met the bot. The worker trusts the ids a job
carries (it cannot ask Slack who really wrote it); what it guarantees is that an answer
goes only where the policy lets that repository be seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from jobs.question import Origin

ANY = "*"
V = TypeVar("V")


class AccessRule(BaseModel):
    """Who may ask about one repository (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channels: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    dms: bool = False
    shared: bool = False


DEFAULT_RULE = AccessRule(dms=True)  # a repository no channel was given, and no rule names
CHANNEL_BOUND_RULE = AccessRule()  # one ASKBOX_CHANNEL_REPOS gives a channel: that channel's only


def is_dm(origin: Origin) -> bool:
    """A direct message: Slack's ids of DM conversations start with "D"."""
    return origin.kind == "slack" and (origin.channel or "").startswith("D")


def rule_for(repo: str, policy: Mapping[str, AccessRule], channel_repos: Mapping[str, str]) -> AccessRule:
    """The repository's rule, ``"*"``'s, or the default (the module docstring)."""
    rule = policy.get(repo) or policy.get(ANY)
    if rule is not None:
        return rule
    return CHANNEL_BOUND_RULE if repo in channel_repos.values() else DEFAULT_RULE


def may_ask(repo: str, origin: Origin, policy: Mapping[str, AccessRule], channel_repos: Mapping[str, str]) -> bool:
    """Whether a question from ``origin`` may be about the configured repository ``repo``."""
    if origin.kind == "terminal":
        return True  # the operator, on the worker's own queue
    rule = rule_for(repo, policy, channel_repos)
    if rule.users and origin.user not in rule.users:
        return False
    channel = origin.channel or ""
    if is_dm(origin):
        return rule.dms and (rule.shared or not origin.shared)
    if not channel:
        return False
    if channel_repos.get(channel) == repo or channel in rule.channels:
        return True
    return ANY in rule.channels and (rule.shared or not origin.shared)


def visible(
    repos: Mapping[str, V], origin: Origin, policy: Mapping[str, AccessRule], channel_repos: Mapping[str, str]
) -> dict[str, V]:
    """The configured repositories ``origin`` may ask about: what it may be told exists,
    so a refused name reads exactly like an unknown one."""
    return {name: value for name, value in repos.items() if may_ask(name, origin, policy, channel_repos)}


def cache_scope(origin: Origin) -> str:
    """Where a cached answer may be served again: the channel it was asked in, one
    person's DMs, or the terminal. Never wider, so no answer crosses into a place that
    did not ask it, whatever the policy says today."""
    if origin.kind == "terminal":
        return "terminal"
    if is_dm(origin):
        return f"dm:{origin.team}:{origin.user}"
    return f"channel:{origin.team}:{origin.channel}"
