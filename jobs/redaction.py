"""Configured secrets, in every form an agent could print them, scrubbed from all askbox shows.

An agent runs commands in its sandbox: ``env``, ``printenv KEY | base64`` or ``xxd`` put a
secret in its output, and from there into the answer, the thread, the cache, the memory
and the logs. Through the model gateway a Gemini sandbox holds no real key at all; other
agents (cursor-agent keeps ``CURSOR_API_KEY``) and other secrets in the environment do.
So every text that leaves a question is passed through one ``Redactor`` built from the
values of all configured secrets.

Forms covered: the raw value; hex (lower and upper case); base64 (standard and URL-safe,
of the value alone or followed by a newline as ``printenv`` prints it, and at each of
the three byte alignments it can have inside a longer encoded text). No library finds
given strings in their encoded forms, hence this module.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable

from sandbox.agents.events import AgentEvent, TextDelta, ToolFinished, ToolStarted

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 8  # shorter values would redact ordinary words


def _base64_forms(raw: bytes) -> set[str]:
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for value in (raw, raw + b"\n"):
            for offset in range(3):
                # Encode behind `offset` filler bytes; keep only the characters that depend
                # on the secret alone (whole 3-byte groups inside it).
                encoded = encode(b"\0" * offset + value).decode().rstrip("=")
                skip = 0 if offset == 0 else 4 * ((offset + 2) // 3)
                whole = (len(value) - ((3 - offset) % 3)) // 3 * 4
                inner = encoded[skip : skip + whole] if offset else encoded[: len(value) // 3 * 4]
                if len(inner) >= MIN_SECRET_CHARS:
                    forms.add(inner)
            forms.add(encode(value).decode())  # the whole value encoded alone, padding included
    return forms


def forms_of(secret: str) -> set[str]:
    raw = secret.encode()
    return {secret, raw.hex(), raw.hex().upper(), *_base64_forms(raw)}


class Redactor:
    """Replaces every form of every secret with ``[redacted]``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = frozenset(s for s in secrets if s and len(s) >= MIN_SECRET_CHARS)
        # Longest first: a form that contains another is replaced whole.
        forms = sorted({f for s in self.secrets for f in forms_of(s)}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, forms))) if forms else None

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(REDACTED, text)

    def with_secrets(self, more: Iterable[str]) -> Redactor:
        """A redactor that also hides ``more`` (e.g. one question's gateway token)."""
        return Redactor([*self.secrets, *more])


class EventRedactor:
    """Redacts an agent's events on their way to the thread and the job's meta.

    Answer text arrives in pieces, and a secret may be cut between two of them: text is
    handed on only up to the last ``longest`` characters, which wait for the next piece
    (the final answer is redacted whole, so the held-back tail is never lost)."""

    def __init__(self, redactor: Redactor) -> None:
        self.redact = redactor
        self._held = ""
        self._longest = max((len(f) for s in redactor.secrets for f in forms_of(s)), default=0)

    def __call__(self, event: AgentEvent) -> AgentEvent | None:
        if isinstance(event, TextDelta):
            text = self.redact(self._held + event.text)
            cut = max(len(text) - self._longest, 0)
            out, self._held = text[:cut], text[cut:]
            return event.model_copy(update={"text": out}) if out else None
        if isinstance(event, (ToolStarted, ToolFinished)):
            fields = {"summary": self.redact(event.summary)}
            if isinstance(event, ToolFinished):
                fields["detail"] = self.redact(event.detail)
            return event.model_copy(update=fields)
        return event
