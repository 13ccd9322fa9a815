"""One question, one whole OpenTelemetry trace: received over OTLP/HTTP from the real
processes that handled it.

Real `askbox bot` (Socket Mode, against the fake Slack), `askbox worker` (the Gemini CLI
in a sandbox) and `askbox gateway` (against the fake Gemini API), each with
``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a small OTLP/HTTP receiver of the test's own
on loopback, which decodes the protobuf export requests as a collector would. A mention is
answered; then the trace of that question must hold the bot's handling of the event, the
wait in the queue, the worker's stages, the sandbox run, the gateway's model requests and
the Slack posts, all under one root, every parent present.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from redis import Redis

from tests.fakes.gemini_api import FakeGeminiAPI, Text
from tests.fakes.slack import FakeSlack
from tests.integration.conftest import ASKER, CHANNEL, bot_env
from tests.integration.gateway_helpers import GatewayProcess, gateway_env
from tests.integration.pipeline_helpers import ASKBOX, Workers, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.redis]


@dataclass(frozen=True)
class Span:
    trace: str
    id: str
    parent: str
    name: str
    service: str
    attributes: dict[str, str]


class OtlpReceiver:
    """POST /v1/traces on 127.0.0.1: OTLP/HTTP with protobuf bodies, every span kept."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver.receive(body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource in request.resource_spans:
            service = next((a.value.string_value for a in resource.resource.attributes if a.key == "service.name"), "")
            for scope in resource.scope_spans:
                for span in scope.spans:
                    found.append(
                        Span(
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.name,
                            service,
                            {a.key: a.value.string_value for a in span.attributes},
                        )
                    )
        with self.lock:
            self.spans += found

    def trace_of(self, job_id: str) -> list[Span]:
        with self.lock:
            ids = {
                s.trace for s in self.spans if s.name == "askbox.question" and s.attributes.get("askbox.job") == job_id
            }
            return [s for s in self.spans if s.trace in ids]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


def test_one_question_is_one_whole_trace(
    fake: FakeSlack, redis_server, repo: Path, egress_root: Path, built_images, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
    with FakeGeminiAPI() as gemini:
        gemini.script(Text("answer() returns 42.", chunks=3, delay=0.2))
        gateway = GatewayProcess({**gateway_env(gemini.base_url, ["trace-key"], redis_server.url), **traced}).start()
        env = {
            **bot_env(fake, redis_server.url, repo),
            **traced,
            "ASKBOX_AGENT": "gemini",
            "ASKBOX_GATEWAY_SOCKET_DIR": str(gateway.socket_dir),
            "ASKBOX_EGRESS_SOCKET_DIR": str(egress_root),
        }
        workers = Workers(env)
        bot_log = (tmp_path / "bot.log").open("w")
        bot = subprocess.Popen([ASKBOX, "bot"], env=env, stdout=bot_log, stderr=subprocess.STDOUT)
        try:
            workers.start(1, log_dir=tmp_path)
            fake.wait_connections(1, timeout=30)
            mention = fake.app_mention(ASKER, CHANNEL, f"<@{fake.bot_user_id}> where is answer()?")
            fake.push_event(mention)
            fake.wait_until(
                lambda: "white_check_mark" in fake.get_message(CHANNEL, mention["ts"]).reactions, timeout=120
            )
            [job_id] = [
                k.decode().removeprefix("rq:job:")
                for k in Redis.from_url(redis_server.url).keys("rq:job:*")
                if mention["ts"].replace(".", "_") in k.decode()
            ]
            names = (
                "askbox.bot.event",
                "askbox.queue.wait",
                "askbox.question",
                "askbox.repo.pin",
                "askbox.sandbox.run",
                "askbox.gateway.request",
                "askbox.final",
            )
            try:
                wait_for(lambda: {s.name for s in receiver.trace_of(job_id)} >= set(names), 30, "the whole trace")
            except AssertionError:
                got = sorted({(s.service, s.name) for s in receiver.trace_of(job_id)})
                raise AssertionError(f"spans of {job_id}: {got}\n{workers.tail()}") from None
        finally:
            bot.terminate()
            bot.wait(timeout=15)
            workers.stop()
            gateway.stop()

    spans = receiver.trace_of(job_id)
    by_id = {s.id: s for s in spans}
    [root] = [s for s in spans if not s.parent]
    assert root.name == "askbox.bot.event" and root.service == "askbox-bot"
    orphans = [s.name for s in spans if s.parent and s.parent not in by_id]
    assert orphans == [], f"spans whose parent is not in the trace: {orphans}"
    assert {s.service for s in spans} == {"askbox-bot", "askbox-worker", "askbox-gateway"}

    def parent(name: str) -> str:
        return next(by_id[s.parent].name for s in spans if s.name == name)

    # The shape: the question continues the bot's span; the sandbox run and the gateway's
    # requests are inside it; the answer's Slack posts are inside the final.
    assert parent("askbox.question") == parent("askbox.queue.wait") == "askbox.bot.event"
    assert parent("askbox.sandbox.run") == "askbox.question"
    assert all(by_id[s.parent].name == "askbox.sandbox.run" for s in spans if s.name == "askbox.gateway.request")
    assert any(s.name == "slack chat.postMessage" and s.service == "askbox-bot" for s in spans)  # the status message
    final_posts = [s for s in spans if s.name.startswith("slack ") and by_id[s.parent].name == "askbox.final"]
    assert final_posts, sorted((s.name, by_id[s.parent].name if s.parent else "") for s in spans)
    assert any(s.name.startswith("slack chat.") and s.service == "askbox-worker" for s in spans)
