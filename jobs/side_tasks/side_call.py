"""One side-task call, through the model gateway, that never fails the question.

The provider is ``ASKBOX_SIDE_PROVIDER``: Gemini with the real google-genai client, or
Anthropic's Messages API or the OpenAI provider's Chat Completions (OpenAI, or the
operator's own OpenAI-compatible server) with one plain JSON POST over the session's
socket (:func:`other_provider_call`, httpx: one request each, for which the vendors'
SDKs would be two more dependencies).

Every call opens a gateway session of its own (so it shares the gateway's Redis-held
limits, key pool, 429 handling with ``RetryInfo``, circuit breaker, metering and budgets
with the agents' traffic), sends one request with the real google-genai client over that
session's Unix socket, and closes the session. google-genai's own retries are off: the
gateway retries, and waits its turn under the shared limits up to the call's timeout.

What the calls used, as the gateway metered it (each session's usage, read back after
it closed), adds up in ``tokens`` and ``cost_usd``.

Any failure returns None and the side task is skipped. An outage (no gateway, the API
failing, the limits saturated) is logged once, not per message: the first failure sets a
Redis flag (work-horses are forked per job, so a process-level flag would not last), the
first success after it clears the flag and says so.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, TypeVar

import httpx
from google import genai
from google.genai import errors, types
from pydantic import BaseModel, ValidationError
from redis import Redis, RedisError

from gateway.client import (
    GatewayClient,
    GatewaySession,
    GatewayUnavailable,
    SessionMeta,
    session_state,
    upstream_paused,
)
from jobs import keys
from jobs.side_tasks.settings import GeminiSettings

log = logging.getLogger(__name__)

Schema = TypeVar("Schema", bound=BaseModel)

# keys.SIDE_TASK_OUTAGE is set while side tasks are failing, for this long at most.
OUTAGE_TTL = keys.DAY  # an outage longer than this is logged again, once a day


class SideTaskSkipped(Exception):
    """Why a call gave no answer (for the once-per-outage log line)."""


class GeminiCalls:
    """Side-task calls for one question: its identity goes to the gateway for metering."""

    def __init__(self, settings: GeminiSettings, gateway_socket_dir: Path, redis: Redis, meta: SessionMeta) -> None:
        self.settings = settings
        self.gateway = GatewayClient(gateway_socket_dir)
        self.redis = redis
        self.meta = meta
        self.tokens = 0  # what these calls used, metered by the gateway
        self.cost_usd = 0.0
        self.skipped: str | None = None  # why the last call gave no answer

    @property
    def model(self) -> str:
        return self.settings.model

    def enabled(self, task: str) -> bool:
        return self.settings.enabled(task)

    def text(self, task: str, system: str, prompt: str, timeout: float) -> str | None:
        """A plain-text answer, or None (skipped)."""
        response = self._call(task, system, prompt, None, timeout)
        text = (response.text or "").strip() if response is not None else ""
        return text or None

    def structured(self, task: str, system: str, prompt: str, schema: type[Schema], timeout: float) -> Schema | None:
        """An answer in ``schema`` (a JSON schema the API enforces), or None (skipped)."""
        response = self._call(task, system, prompt, schema, timeout)
        if response is None:
            return None
        parsed = response.parsed
        if isinstance(parsed, schema):
            return parsed
        try:  # the SDK leaves .parsed empty when the JSON does not fit; say why
            return schema.model_validate_json(response.text or "")
        except ValidationError as exc:
            self.skipped = f"the answer does not fit its schema ({exc.errors()[0]['msg']})"
            log.info("side task %s: %s; skipped", task, self.skipped)
            return None

    def _call(
        self, task: str, system: str, prompt: str, schema: type[BaseModel] | None, timeout: float
    ) -> types.GenerateContentResponse | Answer | None:
        self.skipped = None
        try:
            response = self._generate(task, system, prompt, schema, timeout)
        except SideTaskSkipped as exc:
            self.skipped = str(exc)
            self._outage(task, str(exc))
            return None
        except Exception as exc:
            self.skipped = f"{type(exc).__name__}: {exc}"
            log.exception("side task %s failed; skipped", task)
            return None
        self._recovered()
        return response

    def _generate(
        self, task: str, system: str, prompt: str, schema: type[BaseModel] | None, timeout: float
    ) -> types.GenerateContentResponse | Answer:
        provider = self.settings.side_provider
        paused = upstream_paused(self.redis, provider)  # the gateways' shared breaker: no call for nothing
        if paused is not None:
            raise SideTaskSkipped(f"the {provider} API is paused by the gateway's breaker for {paused:.0f} s")
        meta = self.meta.model_copy(
            update={
                "job_id": f"{self.meta.job_id}-{task}",
                "model": self.model,
                "ttl": math.ceil(timeout) + 30,
                "provider": provider,
            }
        )
        try:
            session = self.gateway.open(meta)
        except GatewayUnavailable as exc:
            raise SideTaskSkipped(str(exc)) from exc
        if provider != "gemini":
            try:
                return other_provider_call(provider, session, self.model, system, prompt, schema, timeout)
            finally:
                self._close(session)
        config = types.GenerateContentConfig(
            system_instruction=system,
            temperature=0.0,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )  # no tools here
        if schema is not None:
            config.response_mime_type, config.response_schema = "application/json", schema
        try:
            # httpx (not httpx2): google-genai accepts either and detects which from the client;
            # httpx is what the gateway client already uses for Unix sockets.
            transport = httpx.HTTPTransport(uds=str(session.socket))
            with httpx.Client(transport=transport, timeout=timeout) as http:
                client = genai.Client(
                    vertexai=False,
                    api_key=session.token.get_secret_value(),
                    http_options=types.HttpOptions(
                        base_url="http://gateway",
                        api_version="v1beta",
                        httpx_client=http,
                        timeout=int(timeout * 1000),
                        retry_options=types.HttpRetryOptions(attempts=1),
                    ),
                )
                return client.models.generate_content(model=self.model, contents=prompt, config=config)
        except errors.APIError as exc:
            raise SideTaskSkipped(f"the gateway answered {exc.code}: {(exc.message or '')[:200]}") from exc
        except httpx.HTTPError as exc:
            raise SideTaskSkipped(f"no answer in time ({type(exc).__name__}: {exc})") from exc
        finally:
            self._close(session)

    def _close(self, session: GatewaySession) -> None:
        """Revoke the session, then add what it used (the gateway keeps that a day)."""
        self.gateway.close(session)
        try:
            used = session_state(self.redis, session.id)
        except RedisError as exc:  # the count is a report's; the call's answer stands
            log.warning("side task usage unreadable: %s", exc)
            return
        self.tokens += used.total_tokens
        self.cost_usd += used.cost_usd

    def _outage(self, task: str, why: str) -> None:
        if self.redis.set(keys.SIDE_TASK_OUTAGE, why, nx=True, ex=OUTAGE_TTL):
            log.warning(
                "Gemini side tasks are unavailable, skipping them until they work again (first failure: %s, %s)",
                task,
                why,
            )

    def _recovered(self) -> None:
        if self.redis.delete(keys.SIDE_TASK_OUTAGE):
            log.warning("Gemini side tasks work again")


class Answer:
    """What a side task reads of an answer: its text, and no SDK-parsed object."""

    parsed = None

    def __init__(self, text: str) -> None:
        self.text = text


def other_provider_call(
    provider: str,
    session: GatewaySession,
    model: str,
    system: str,
    prompt: str,
    schema: type[BaseModel] | None,
    timeout: float,
) -> Answer:
    """One Anthropic Messages or OpenAI Chat Completions call over the session's socket."""
    token = session.token.get_secret_value()
    if provider == "anthropic":
        if schema is not None:  # asked for in words: the JSON is validated on our side
            system += (
                f"\n\nAnswer with one JSON object and nothing else, matching this JSON schema: "
                f"{json.dumps(schema.model_json_schema())}"
            )
        path, headers = "/v1/messages", {"x-api-key": token, "anthropic-version": "2023-06-01"}
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": 2048,
            "temperature": 0.0,
            "system": system,
            "messages": [{"role": "user", "content": prompt}],
        }
    else:
        path, headers = "/v1/chat/completions", {"authorization": f"Bearer {token}"}
        body = {
            "model": model,
            "temperature": 0.0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
        }
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
            }
    try:
        transport = httpx.HTTPTransport(uds=str(session.socket))
        with httpx.Client(transport=transport, base_url="http://gateway", timeout=timeout) as http:
            response = http.post(path, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise SideTaskSkipped(f"no answer in time ({type(exc).__name__}: {exc})") from exc
    if response.status_code != 200:
        raise SideTaskSkipped(f"the gateway answered {response.status_code}: {response.text[:200]}")
    data = response.json()
    if provider == "anthropic":
        text = "".join(b.get("text", "") for b in data.get("content") or [] if isinstance(b, dict))
    else:
        choices = data.get("choices") or [{}]
        text = (choices[0].get("message") or {}).get("content") or ""
    return Answer(text)
