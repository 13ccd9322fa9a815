"""Gemini side tasks: triage of small talk, thread compaction, summaries of long answers.

Each is optional and off the critical path: every call goes through the model gateway
(its shared limits, key pool, 429 handling, breaker, metering and budgets), and any
failure skips the side task (``client.py``). One concept per module: ``settings``,
``client`` (a call over a gateway session), ``triage``, ``compaction``, ``summary``.
"""
