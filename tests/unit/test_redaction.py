"""A configured secret in any form an agent could print it never survives redaction."""

from __future__ import annotations

import base64

import pytest

from jobs.redaction import REDACTED, EventRedactor, Redactor
from sandbox.agents.events import TextDelta, ToolFinished

KEY = "AIzaSyTESTKEY-1234567890abcdefghij"


@pytest.mark.parametrize("prefix", ["", "x", "xy", "GEMINI_API_KEY=", "HOME=/home/agent\nGEMINI_API_KEY="])
@pytest.mark.parametrize("newline", ["", "\n"])
def test_raw_hex_and_base64_at_every_alignment(prefix: str, newline: str) -> None:
    redact = Redactor([KEY])
    payload = (prefix + KEY + newline + "OTHER=1\n").encode()
    for encoded in (
        payload.decode(),
        payload.hex(),
        payload.hex().upper(),
        base64.b64encode(payload).decode(),
        base64.urlsafe_b64encode(payload).decode(),
    ):
        out = redact(encoded)
        assert REDACTED in out
        assert KEY not in out and KEY.encode().hex() not in out.lower()
        # What is left decodes to at most a couple of the key's bytes at each edge.
        assert base64.b64encode(KEY.encode()).decode()[4:-4] not in out


def test_short_or_empty_values_are_not_secrets() -> None:
    assert Redactor(["", "abc"])("abc is a word") == "abc is a word"


def test_a_secret_split_between_two_deltas_is_still_caught() -> None:
    events = EventRedactor(Redactor([KEY]))
    half = len(KEY) // 2
    shown = [events(TextDelta(text="the key is " + KEY[:half])), events(TextDelta(text=KEY[half:] + " and more " * 20))]
    text = "".join(e.text for e in shown if e is not None)
    assert KEY[:half] not in text and KEY[half:] not in text and "and more" in text
    finished = events(ToolFinished(call_id="1", tool="shell", summary=f"Ran `echo {KEY}`", ok=False, detail=KEY))
    assert KEY not in finished.summary and KEY not in finished.detail


def test_with_secrets_adds_a_questions_token() -> None:
    redact = Redactor([KEY]).with_secrets(["per-question-token-0123456789"])
    assert redact(f"{KEY} per-question-token-0123456789") == f"{REDACTED} {REDACTED}"
