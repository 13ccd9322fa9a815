"""App Home: the Home tab (``views.publish``) and the Messages tab's suggested prompts.

On ``app_home_opened``:

- ``tab == "messages"`` (askbox's agent DM, where every message starts its own thread):
  suggested prompts (``assistant.threads.setSuggestedPrompts``) built from the
  repositories this user may ask about in a DM, and only those (jobs/access.py);
- ``tab == "home"``: how to ask; the repositories this user may ask about and where;
  their recent questions with state and a permalink to each thread
  (``chat.getPermalink``); their usage today; for ``ASKBOX_ADMINS`` also the day's
  totals per channel and model, and the feedback per repository.

Both run after the acknowledgement and are read-only towards Redis.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.ingress import Ingress
from jobs import access, feedback, keys
from jobs.question import Origin, Question
from jobs.redis_text import text as redis_text
from jobs.slack.blocks import Block, section
from jobs.slack.mrkdwn import escape

log = logging.getLogger(__name__)

MAX_PROMPTS = 4  # Slack shows at most four
RECENT_SHOWN = 10
PROMPT_TOPICS = (
    "How is authentication done in `{repo}`?",
    "Where are errors handled in `{repo}`?",
    "How is `{repo}` tested?",
    "What does `{repo}` do, in short?",
)


def prompts_for(ingress: Ingress, team: str, user: str, channel: str) -> list[dict[str, str]]:
    """Up to four suggested prompts, each about a repository this user may ask about here."""
    jobs = ingress.settings.jobs
    origin = Origin(kind="slack", user=user, team=team, channel=channel)
    repos = sorted(access.visible(jobs.repos, origin, jobs.repo_access, jobs.channel_repos))
    prompts = []
    for i in range(min(MAX_PROMPTS, max(len(repos), 1) * len(PROMPT_TOPICS))):
        if not repos:
            break
        repo = repos[i % len(repos)]
        title = PROMPT_TOPICS[(i // len(repos)) % len(PROMPT_TOPICS)].format(repo=repo)
        prompts.append({"title": title, "message": f"repo={repo} {title.replace('`', '')}"})
    return prompts


def set_prompts(ingress: Ingress, team: str, user: str, channel: str) -> None:
    prompts = prompts_for(ingress, team, user, channel)
    if not prompts:
        prompts = [{"title": "How do I ask?", "message": "help"}]
    ingress.call(
        "assistant_threads_setSuggestedPrompts", channel_id=channel, title="Ask about your code", prompts=prompts
    )


def places(ingress: Ingress, repo: str, user: str) -> str | None:
    """Where ``user`` may ask about ``repo``, in words; None when nowhere."""
    jobs = ingress.settings.jobs
    rule = access.rule_for(repo, jobs.repo_access, jobs.channel_repos)
    if rule.users and user not in rule.users:
        return None
    where = []
    channels = sorted(
        {c for c in rule.channels if c != access.ANY} | {c for c, r in jobs.channel_repos.items() if r == repo}
    )
    if access.ANY in rule.channels:
        where.append("any channel")
    where += [f"<#{c}>" for c in channels]
    if rule.dms:
        where.append("my Messages tab")
    return ", ".join(where) or None


def home_view(ingress: Ingress, team: str, user: str) -> dict[str, Any]:
    redis = ingress.redis
    blocks: list[Block] = [
        {"type": "header", "text": {"type": "plain_text", "text": "askbox: questions about your code"}},
        section(
            "*How to ask*: mention me in a channel (`@askbox how does retry work?`), write to me in my "
            "Messages tab, type `/askbox QUESTION [repo=NAME]`, or use *Ask askbox about this* on any message. "
            "Reply in the thread to follow up."
        ),
        {"type": "divider"},
    ]
    lines = [
        f"• `{escape(name)}`: {where}"
        for name in sorted(ingress.settings.jobs.repos)
        if (where := places(ingress, name, user))
    ]
    blocks.append(section("*Repositories you may ask about*\n" + ("\n".join(lines) or "None yet: ask an admin.")))
    blocks.append(section("*Your recent questions*\n" + (_recent(ingress, team, user) or "None yet.")))
    day = _day(redis, keys.daily_usage("user", user))
    blocks.append(section(f"*Your usage today (UTC)*: {_usage(day)}"))
    if user in ingress.settings.jobs.admins:
        blocks += [{"type": "divider"}, section(_admin(ingress))]
    return {"type": "home", "blocks": blocks[:100]}


def publish(ingress: Ingress, team: str, user: str) -> None:
    ingress.call("views_publish", user_id=user, view=home_view(ingress, team, user))


def _recent(ingress: Ingress, team: str, user: str) -> str:
    from jobs.queue import fetch

    lines = []
    for raw in ingress.redis.lrange(keys.user_questions(team, user), 0, RECENT_SHOWN - 1):
        try:
            job = fetch(ingress.redis, redis_text(raw))
            question = Question.model_validate(job.args[0])
            meta = job.get_meta(refresh=True) or {}
        except Exception:  # noqa: BLE001 - expired: left out
            continue
        state = (meta.get("final") or {}).get("kind") or meta.get("state") or "queued"
        origin = question.origin
        link = ingress.call(
            "chat_getPermalink", channel=origin.channel, message_ts=origin.thread_ts or origin.message_ts
        )
        text = escape(question.text.splitlines()[0][:80]) if question.text else "(empty)"
        shown = f"<{link['permalink']}|{text}>" if link else text
        lines.append(f"• {shown} · {state}")
    return "\n".join(lines)


def _day(redis: Any, key: str) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in redis.hgetall(key).items()}


def _usage(day: dict[str, float]) -> str:
    return (
        f"{int(day.get('questions', 0))} questions, {int(day.get('tokens', 0)):,} tokens, "
        f"about ${day.get('cost_usd', 0.0):.2f}"
    )


def _admin(ingress: Ingress) -> str:
    """The day's totals per channel and per model, and the feedback per repository."""
    redis = ingress.redis
    prefix = keys.daily_usage("channel", "")
    channels = sorted(k.decode()[len(prefix) :] for k in redis.scan_iter(match=prefix + "*", count=500))
    model_prefix = keys.daily_usage("model", "")
    models = sorted(k.decode()[len(model_prefix) :] for k in redis.scan_iter(match=model_prefix + "*", count=500))
    lines = ["*Today, per channel*"] + [f"• <#{c}>: {_usage(_day(redis, prefix + c))}" for c in channels[:20]]
    lines += ["*Today, per model*"] + [f"• {escape(m)}: {_usage(_day(redis, model_prefix + m))}" for m in models[:20]]
    votes = feedback.summary(redis)
    lines += ["*Feedback per repository*"] + [
        f"• `{escape(repo)}`: {row.get('up', 0)} helpful, {row.get('down', 0)} not"
        for repo, row in sorted(votes.items())
    ]
    return "\n".join(lines)[:2900]
