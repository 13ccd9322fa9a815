import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from jobs.logs import REDACTED, configure_json_logging, current_context, log_context

SLACK_BOT = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp"
SLACK_APP = "xapp-1-A0123456789-1234567890123-abcdef0123456789"
GOOGLE = "AIzaSyD-1234567890abcdefghijklmnopqrstu"


@pytest.fixture()
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    out = io.StringIO()
    configure_json_logging("DEBUG", stream=out)
    try:
        yield out
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_one_json_object_per_line(stream):
    log = logging.getLogger("askbox.test")
    log.info("hello %s", "world")
    log.warning("two\nlines")
    first, second = lines(stream)
    assert first["message"] == "hello world"
    assert first["level"] == "INFO" and first["logger"] == "askbox.test"
    assert first["ts"].endswith("+00:00") and "T" in first["ts"]
    assert second["message"] == "two\nlines"
    assert "job_id" not in first  # context fields only when set


def test_context_fields_nest_and_reset(stream):
    log = logging.getLogger("askbox.test")
    with log_context(job_id="j1", repo="web", user="U1", thread="C1:1700000000.1"):
        log.info("outer")
        with log_context(user="U2"):
            log.info("inner")
        assert current_context()["user"] == "U1"
    log.info("after")
    outer, inner, after = lines(stream)
    assert {k: outer[k] for k in ("job_id", "repo", "user", "thread")} == {
        "job_id": "j1",
        "repo": "web",
        "user": "U1",
        "thread": "C1:1700000000.1",
    }
    assert inner["user"] == "U2" and inner["job_id"] == "j1"
    assert not {"job_id", "repo", "user", "thread"} & after.keys()


def test_context_is_per_thread(stream):
    log = logging.getLogger("askbox.test")

    def other():
        log.info("from another thread")

    with log_context(job_id="mine"):
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
    (line,) = lines(stream)
    assert "job_id" not in line


def test_exception_is_a_string_field(stream):
    log = logging.getLogger("askbox.test")
    with log_context(job_id="j2"):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    (line,) = lines(stream)
    assert line["job_id"] == "j2"
    assert isinstance(line["exc_info"], str)
    assert "RuntimeError: boom" in line["exc_info"] and "Traceback" in line["exc_info"]


def test_extra_fields_are_kept(stream):
    logging.getLogger("askbox.test").info("done", extra={"elapsed": 1.5, "outcome": "answer"})
    (line,) = lines(stream)
    assert line["elapsed"] == 1.5 and line["outcome"] == "answer"


def test_secrets_are_redacted_everywhere(stream):
    log = logging.getLogger("askbox.test")
    log.info("token %s and %s", SLACK_BOT, SLACK_APP)
    log.info(f"gemini key {GOOGLE} in the message itself")
    log.info("headers", extra={"header": f"Authorization: Bearer {'z' * 24}"})
    log.info(
        "extras",
        extra={"api_key": "plain-looking", "SLACK_BOT_TOKEN": "abc", "client_secret": 42, "note": f"x {SLACK_BOT}"},
    )
    try:
        raise ValueError(f"bad auth {SLACK_BOT}")
    except ValueError:
        log.exception("with traceback")
    text = stream.getvalue()
    for secret in (SLACK_BOT, SLACK_APP, GOOGLE, "plain-looking", "z" * 24):
        assert secret not in text
    first, second, third, fourth, fifth = lines(stream)
    assert first["message"] == f"token {REDACTED} and {REDACTED}"
    assert REDACTED in second["message"]
    assert third["header"] == f"Authorization: Bearer {REDACTED}"
    assert fourth["api_key"] == fourth["SLACK_BOT_TOKEN"] == fourth["client_secret"] == REDACTED
    assert fourth["note"] == f"x {REDACTED}"
    assert "ValueError: bad auth" in fifth["exc_info"] and REDACTED in fifth["exc_info"]


def test_configure_replaces_handlers(stream):
    configure_json_logging("INFO", stream=stream)  # twice: still one line per record
    logging.getLogger("askbox.test").debug("hidden")
    logging.getLogger("askbox.test").info("shown")
    assert [line["message"] for line in lines(stream)] == ["shown"]
    assert len(logging.getLogger().handlers) == 1
