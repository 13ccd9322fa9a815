"""The fake Gemini API against the REAL clients: google-genai and the Gemini CLI.

If these pass, tests built on the fake exercise the same wire format as production.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import errors, types

from tests.conftest import unavailable
from tests.fakes.gemini_api import (
    FakeGeminiAPI,
    FunctionCall,
    FunctionCalls,
    RecordedRequest,
    Redirect,
    Text,
    Turn,
    new_token,
    rate_limited,
    server_error,
)

MODEL = "gemini-2.5-flash"
KEY = "test-key"


@pytest.fixture
def api() -> Iterator[FakeGeminiAPI]:
    with FakeGeminiAPI() as fake:
        yield fake
        # A bug in the fake must fail the test, not hide behind a client's retry.
        assert not fake.errors, fake.errors


def client_for(api: FakeGeminiAPI, key: str = KEY) -> genai.Client:
    # No retry options: google-genai then makes exactly one attempt, which keeps the
    # scripted turns in step with the calls. Keep the client in a variable: google-genai
    # closes its HTTP client when the Client object is garbage-collected.
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=api.base_url))


@pytest.fixture
def client(api: FakeGeminiAPI) -> genai.Client:
    return client_for(api)


def retry_delay(err: errors.APIError) -> str | None:
    """The RetryInfo.retryDelay of a Google API error, as the service sent it."""
    for detail in (err.details or {}).get("error", {}).get("details", []):
        if detail.get("@type", "").endswith("google.rpc.RetryInfo"):
            return detail.get("retryDelay")
    return None


# ------------------------------------------------------------------ google-genai


def test_generate_content_returns_scripted_text(api: FakeGeminiAPI, client: genai.Client) -> None:
    api.script(Text("hello from the fake", chunks=3))

    response = client.models.generate_content(model=MODEL, contents="hi")

    assert response.text == "hello from the fake"
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.usage_metadata.total_token_count > 0
    (req,) = api.requests
    assert req.action == "generateContent" and req.model == MODEL
    assert req.api_key == KEY
    assert req.text() == "hi"


def test_stream_yields_several_chunks(api: FakeGeminiAPI, client: genai.Client) -> None:
    api.script(Text("one two three four five six", chunks=3))

    chunks = list(client.models.generate_content_stream(model=MODEL, contents="hi"))

    assert len(chunks) == 3
    assert "".join(c.text for c in chunks) == "one two three four five six"
    assert [c.candidates[0].finish_reason for c in chunks][-1] == types.FinishReason.STOP
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].usage_metadata.candidates_token_count > 0
    assert api.requests[0].action == "streamGenerateContent"
    assert api.requests[0].query.get("alt") == ["sse"]


def test_slow_stream_spaces_chunks(api: FakeGeminiAPI, client: genai.Client) -> None:
    api.script(Text("abcdef", chunks=3, delay=0.2))

    arrivals = []
    started = time.monotonic()
    for _ in client.models.generate_content_stream(model=MODEL, contents="hi"):
        arrivals.append(time.monotonic())

    assert len(arrivals) == 3
    # Two delays of 0.2 s, minus timer slack. Counted from the request, not from the first
    # chunk: a busy machine may deliver the first chunk late, never the last one early.
    assert arrivals[2] - started >= 0.35


def test_rate_limit_surfaces_as_client_error_with_retry_delay(api: FakeGeminiAPI) -> None:
    api.script(rate_limited("1s"), Text("after the wait"))
    client = client_for(api)

    with pytest.raises(errors.ClientError) as excinfo:
        client.models.generate_content(model=MODEL, contents="hi")

    assert excinfo.value.code == 429
    assert excinfo.value.status == "RESOURCE_EXHAUSTED"
    assert retry_delay(excinfo.value) == "1s"
    # The next call gets the next turn: the fake does not retry for the client.
    assert client.models.generate_content(model=MODEL, contents="hi").text == "after the wait"


def test_rate_limit_on_stream(api: FakeGeminiAPI, client: genai.Client) -> None:
    api.script(rate_limited("250ms"))

    with pytest.raises(errors.ClientError) as excinfo:
        list(client.models.generate_content_stream(model=MODEL, contents="hi"))

    assert excinfo.value.code == 429
    assert retry_delay(excinfo.value) == "250ms"


def test_server_error_surfaces_as_server_error(api: FakeGeminiAPI, client: genai.Client) -> None:
    api.script(server_error())

    with pytest.raises(errors.ServerError) as excinfo:
        client.models.generate_content(model=MODEL, contents="hi")

    assert excinfo.value.code == 500


def test_wrong_api_key_is_rejected_like_the_real_service() -> None:
    with FakeGeminiAPI(expected_key="right") as api:
        wrong, right = client_for(api, key="wrong"), client_for(api, key="right")
        with pytest.raises(errors.ClientError) as excinfo:
            wrong.models.generate_content(model=MODEL, contents="hi")
        assert right.models.generate_content(model=MODEL, contents="x").text

    assert excinfo.value.code == 400
    reasons = [d.get("reason") for d in excinfo.value.details["error"]["details"]]
    assert "API_KEY_INVALID" in reasons


def test_function_call_round_trip(api: FakeGeminiAPI) -> None:
    token = new_token()

    def answer(req: RecordedRequest) -> Turn:
        (fr,) = req.function_responses()
        return Text(f"the file says {fr['response']['output']}")

    api.script(FunctionCall("read_file", {"file_path": "notes.txt"}), answer)
    client = client_for(api)
    declaration = types.FunctionDeclaration(
        name="read_file",
        description="Read a file.",
        parameters_json_schema={
            "type": "object",
            "properties": {"file_path": {"type": "string"}},
            "required": ["file_path"],
        },
    )
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[declaration])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    history: list[types.Content] = [types.Content(role="user", parts=[types.Part(text="read it")])]

    first = client.models.generate_content(model=MODEL, contents=history, config=config)
    (call,) = first.function_calls
    assert call.name == "read_file" and call.args == {"file_path": "notes.txt"}
    history += [
        first.candidates[0].content,
        types.Content(
            role="user",
            parts=[types.Part.from_function_response(name=call.name, response={"output": token})],
        ),
    ]
    second = client.models.generate_content(model=MODEL, contents=history, config=config)

    assert second.text == f"the file says {token}"
    assert api.function_responses() == [{"name": "read_file", "response": {"output": token}}]
    assert api.requests[0].declared_functions() == ["read_file"]


def test_parallel_function_calls_and_text_in_one_turn(api: FakeGeminiAPI, client: genai.Client) -> None:
    api.script(
        FunctionCalls(
            FunctionCall("glob", {"pattern": "*.py"}),
            FunctionCall("grep_search", {"pattern": "x"}),
            text="Looking.",
        )
    )

    response = client.models.generate_content(model=MODEL, contents="hi")

    assert [c.name for c in response.function_calls] == ["glob", "grep_search"]
    assert response.candidates[0].content.parts[0].text == "Looking."


def test_thought_summary_is_a_separate_part(api: FakeGeminiAPI, client: genai.Client) -> None:
    api.script(Text("the answer", thought="thinking it over"))

    response = client.models.generate_content(model=MODEL, contents="hi")

    parts = response.candidates[0].content.parts
    assert [(p.text, bool(p.thought)) for p in parts] == [
        ("thinking it over", True),
        ("the answer", False),
    ]
    assert response.text == "the answer"


def test_default_answer_when_script_is_used_up(api: FakeGeminiAPI, client: genai.Client) -> None:
    assert client.models.generate_content(model=MODEL, contents="hi").text == "OK"


def test_count_tokens(api: FakeGeminiAPI, client: genai.Client) -> None:
    result = client.models.count_tokens(model=MODEL, contents="hello world " * 20)

    assert result.total_tokens > 0
    assert api.requests[0].action == "countTokens"
    assert api.pending == 0  # counting does not consume a turn


def test_v1beta_is_served_too(api: FakeGeminiAPI) -> None:
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=api.base_url, api_version="v1beta"))
    api.script(Text("beta"))

    assert client.models.generate_content(model=MODEL, contents="hi").text == "beta"
    assert api.requests[0].path == f"/v1beta/models/{MODEL}:generateContent"


def test_unknown_paths_get_json_404_and_are_recorded(api: FakeGeminiAPI) -> None:
    url = f"{api.base_url}/v1internal:loadCodeAssist"  # a Code Assist (OAuth) endpoint
    request = urllib.request.Request(url, data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=5)

    assert excinfo.value.code == 404
    assert json.loads(excinfo.value.read())["error"]["status"] == "NOT_FOUND"
    assert [r.path for r in api.unknown] == ["/v1internal:loadCodeAssist"]
    for method in ("DELETE", "PUT", "PATCH"):  # whatever the method, recorded
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            urllib.request.urlopen(urllib.request.Request(f"{api.base_url}/v1beta/files/x", method=method), timeout=5)
        assert excinfo.value.code == 404
    assert [r.method for r in api.unknown[1:]] == ["DELETE", "PUT", "PATCH"]


def test_redirects_and_answers_without_usage(api: FakeGeminiAPI, client: genai.Client) -> None:
    api.script(Text("unmetered", chunks=2, usage=False), Redirect("http://127.0.0.1:9/elsewhere", status=307))
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="hi"))
    assert "".join(c.text or "" for c in chunks) == "unmetered"
    assert all(c.usage_metadata is None for c in chunks) and api.requests[0].usage is None
    url = f"{api.base_url}/v1beta/models/{MODEL}:generateContent"

    class NoFollow(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.build_opener(NoFollow).open(urllib.request.Request(url, data=b"{}", method="POST"), timeout=5)
    assert excinfo.value.code == 307 and excinfo.value.headers["Location"] == "http://127.0.0.1:9/elsewhere"


# -------------------------------------------------------------- real Gemini CLI

# What askbox's agent image uses; see tests/fakes/GEMINI_CLI_NOTES.md for why each key.
CLI_SETTINGS: dict[str, Any] = {
    "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False, "maxAttempts": 2},
    "advanced": {"autoConfigureMemory": False},
    "ide": {"enabled": False},
    "ui": {"showHomeDirectoryWarning": False},
}
CLI_POLICY = """\
[[rule]]
toolName = ["google_web_search", "web_fetch", "run_shell_command", "write_file", "replace",
            "save_memory", "write_todos", "enter_plan_mode", "invoke_agent", "update_topic",
            "activate_skill"]
decision = "deny"
priority = 900
"""
READ_ONLY_TOOLS = {"list_directory", "read_file", "grep_search", "glob"}


def gemini_cli_home(tmp_path: Path) -> Path:
    """A HOME for the real CLI on the host, set up as the agent image sets it up (fails in
    CI, skips locally, when the CLI is not installed)."""
    if shutil.which("gemini") is None:
        unavailable("the Gemini CLI on the host", "npm install -g @google/gemini-cli@0.61.0")
    home = tmp_path / "home"
    (home / ".gemini" / "policies").mkdir(parents=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(CLI_SETTINGS))
    (home / ".gemini" / "policies" / "askbox.toml").write_text(CLI_POLICY)
    return home


def run_gemini_cli(
    api: FakeGeminiAPI, tmp_path: Path, prompt: str
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """Run the real CLI headless against the fake, in tmp_path/workspace, with its own HOME."""
    home = gemini_cli_home(tmp_path)
    # A clean environment: no proxy variables or real keys leak in from the host.
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "TMPDIR": str(tmp_path),
        "GEMINI_API_KEY": KEY,
        "GOOGLE_GEMINI_BASE_URL": api.base_url,
    }
    proc = subprocess.run(
        ["gemini", "-p", prompt, "-m", MODEL, "-o", "stream-json"],
        cwd=tmp_path / "workspace",
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, events


def test_gemini_cli_runs_a_tool_call_and_answers(api: FakeGeminiAPI, tmp_path: Path) -> None:
    token = new_token()
    workspace = tmp_path / "workspace"
    (workspace / "docs").mkdir(parents=True)
    (workspace / "docs" / "secret.txt").write_text(f"the token is {token}\n")

    def answer(req: RecordedRequest) -> Turn:
        seen = " ".join(str(fr["response"]) for fr in req.function_responses())
        return Text(f"Found it: {token}" if token in seen else "no token seen", chunks=3)

    api.script(
        FunctionCall("list_directory", {"dir_path": str(workspace / "docs")}),
        FunctionCall("read_file", {"file_path": "docs/secret.txt"}),
        answer,
    )

    proc, events = run_gemini_cli(api, tmp_path, "What is the token?")

    assert proc.returncode == 0, proc.stderr
    answer_text = "".join(e["content"] for e in events if e["type"] == "message" and e["role"] == "assistant")
    assert token in answer_text
    assert events[-1]["type"] == "result" and events[-1]["status"] == "success"
    tools_used = [e["tool_name"] for e in events if e["type"] == "tool_use"]
    assert tools_used == ["list_directory", "read_file"]
    # The CLI really ran the tools and sent their output back.
    responses = api.function_responses()
    assert [fr["name"] for fr in responses] == ["list_directory", "read_file"]
    assert "secret.txt" in responses[0]["response"]["output"]
    assert token in responses[1]["response"]["output"]
    # Only streamGenerateContent, with our key, and only read-only tools on offer.
    assert {r.action for r in api.requests} == {"streamGenerateContent"}
    assert {r.api_key for r in api.requests} == {KEY}
    assert set(api.requests[0].declared_functions()) == READ_ONLY_TOOLS
    assert not api.unknown


def test_gemini_cli_reports_a_terminal_quota_error(api: FakeGeminiAPI, tmp_path: Path) -> None:
    # A per-day quota is terminal for the CLI: no retry, so this stays fast.
    api.script(rate_limited("1s", quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier"))
    (tmp_path / "workspace").mkdir()

    proc, events = run_gemini_cli(api, tmp_path, "hi")

    assert proc.returncode == 429 % 256  # the CLI exits with the HTTP status, truncated
    result = events[-1]
    assert result["type"] == "result" and result["status"] == "error"
    assert "quota" in result["error"]["message"]
    assert len(api.generate_requests) == 1
