"""Feedback on answers: one verdict per person per answer, what it was about, and its export.

A vote (Slack's feedback buttons under an answer, bot/app.py) is recorded in one MULTI/EXEC
under a WATCH of the answer's votes, so a person's verdict counts once however often, or
however fast, they click; changing their mind moves their vote. Kept with it, once per
answer, is what it was about (question, answer, repo, agent, model, commit, from the
question's RQ job): ``askbox feedback export --since 7d`` writes these as JSONL, the start
of an evaluation set, and ``askbox_answer_feedback_total{verdict,repo,model}`` counts them
(jobs/metrics.py reads the counts at scrape time; the bot process serves no metrics).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal, get_args

from redis import Redis, WatchError
from redis.typing import EncodableT, FieldT

from jobs import keys
from jobs.redis_text import text, texts

Verdict = Literal["up", "down"]
VERDICTS: tuple[str, ...] = get_args(Verdict)
ABOUT_FIELDS = ("question", "answer", "repo", "agent", "model", "commit", "channel", "asker")


def about_job(redis: Redis, job_id: str) -> dict[str, str]:
    """What the answer of ``job_id`` was about, from its RQ job (kept a week)."""
    from jobs.queue import fetch  # RQ's job machinery only when a vote needs it

    try:
        job = fetch(redis, job_id)
    except Exception:  # noqa: BLE001 - expired or unknown: the vote is still counted
        return {}
    question = job.args[0] if job.args else {}
    final = (job.get_meta(refresh=True) or {}).get("final") or {}
    origin = question.get("origin") or {}
    about = {
        "question": question.get("text"),
        "answer": final.get("text"),
        "repo": final.get("repo") or question.get("repo"),
        "agent": final.get("agent"),
        "model": final.get("model"),
        "commit": final.get("commit"),
        "channel": origin.get("channel"),
        "asker": origin.get("user"),
    }
    return {k: str(v) for k, v in about.items() if v}


def record(
    redis: Redis, job_id: str, user: str, verdict: Verdict, about: Callable[[], dict[str, str]] | None = None
) -> bool:
    """``user``'s verdict on the answer of ``job_id``; False when it was theirs already."""
    votes, answer = keys.feedback_votes(job_id), keys.feedback_answer(job_id)
    described = redis.hgetall(answer)
    info = texts(described) or (about or (lambda: about_job(redis, job_id)))()
    with redis.pipeline() as pipe:
        while True:
            try:
                pipe.watch(votes)
                previous = pipe.hget(votes, user)
                if previous == verdict.encode():
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.hset(votes, user, verdict)
                pipe.expire(votes, keys.CLAIM_TTL)
                pipe.hincrby(keys.FEEDBACK_COUNTS, verdict, 1)
                pipe.hincrby(keys.FEEDBACK_LABELS, label(verdict, info), 1)
                if previous:  # they changed their mind
                    pipe.hincrby(keys.FEEDBACK_COUNTS, text(previous), -1)
                    pipe.hincrby(keys.FEEDBACK_LABELS, label(text(previous), info), -1)
                if not described and info:
                    fields: dict[FieldT, EncodableT] = {k: v for k, v in info.items()}  # typed for hset
                    pipe.hset(answer, mapping=fields)
                    pipe.expire(answer, keys.CLAIM_TTL)
                pipe.zadd(keys.FEEDBACK_INDEX, {job_id: time.time()})
                pipe.execute()
                return True
            except WatchError:
                continue  # another click of theirs (or someone's) landed first: look again


def label(verdict: str, info: dict[str, str]) -> str:
    return f"{verdict}|{info.get('repo', '')}|{info.get('model', '')}"


def labelled_counts(redis: Redis) -> dict[tuple[str, str, str], int]:
    """(verdict, repo, model) -> votes, for the metrics."""
    counts = {}
    for field, value in redis.hgetall(keys.FEEDBACK_LABELS).items():
        verdict, repo, model = [*text(field).split("|"), "", ""][:3]
        counts[(verdict, repo, model)] = int(value)
    return counts


def export(redis: Redis, since: float) -> Iterator[dict[str, Any]]:
    """One record per (answer, person) voted on since ``since`` (a Unix time), oldest first."""
    voted: list[tuple[bytes, float]] = redis.zrangebyscore(keys.FEEDBACK_INDEX, since, "+inf", withscores=True)  # type: ignore[assignment]  # withscores: (member, score) pairs
    for raw_id, score in voted:
        job_id = text(raw_id)
        about = texts(redis.hgetall(keys.feedback_answer(job_id)))
        for user, verdict in sorted(texts(redis.hgetall(keys.feedback_votes(job_id))).items()):
            yield {
                "job": job_id,
                "user": user,
                "verdict": verdict,
                "voted_at": round(score, 3),
                **{k: about.get(k) for k in ABOUT_FIELDS},
            }


def summary(redis: Redis) -> dict[str, dict[str, int]]:
    """repo -> verdict -> votes, for App Home's admin view."""
    table: dict[str, dict[str, int]] = {}
    for (verdict, repo, _model), count in labelled_counts(redis).items():
        row = table.setdefault(repo or "-", {v: 0 for v in VERDICTS})
        row[verdict] = row.get(verdict, 0) + count
    return table


def as_jsonl(records: Iterator[dict[str, Any]]) -> Iterator[str]:
    for record_ in records:
        yield json.dumps(record_, ensure_ascii=False)
