"""The model gateway: every agent's LLM traffic, with per-question tokens instead of keys,
one shared rate limit, absorbed 429s and every token counted.

Run it with ``askbox gateway``; the worker talks to it through
:class:`gateway.client.GatewayClient`.
"""
