"""The only way out of a sandbox is the allowlisting proxy; prove what it lets through."""

from __future__ import annotations

import http.server
import subprocess
import threading

import pytest
import redis

from sandbox import OutcomeKind, SandboxSpec
from sandbox.allowlist import parse_allowlist
from sandbox.spec import Limits

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_leftovers")]


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the allowlisted server\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def local_server():
    """An HTTP server on the host's loopback only, as a local LLM endpoint would be."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def curl_status(url: str) -> str:
    return f'echo "{url} $(curl -s -m 5 -o /dev/null -w %{{http_code}} {url})"'


def test_allowlisted_server_reached_everything_else_refused(sandbox, sandbox_image, local_server, docker_client):
    port = local_server
    allow = (f"127.0.0.1:{port}", "api.example-llm.test")
    host_ip = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()[0]
    redis_port = 6379
    script = ";".join(
        [
            f"curl -sS -m 5 http://127.0.0.1:{port}/",  # allowlisted: reached through the proxy
            curl_status(f"http://not-allowed.example.test:{port}/"),  # a name not on the list
            curl_status(f"http://127.0.0.1:{redis_port}/"),  # loopback, but Redis's port
            curl_status(f"http://127.0.0.2:{port}/"),  # another loopback IP literal
            curl_status(f"http://{host_ip}:{port}/"),  # the host's own address as a literal
            curl_status(f"https://127.0.0.1:{redis_port}/"),  # CONNECT to Redis
            # without the proxy there is no way at all
            f"curl -s -m 5 --noproxy '*' http://127.0.0.1:{port}/ || echo DIRECT-FAILED",
            "env | grep -i _proxy | sort",
        ]
    )
    spec = SandboxSpec(
        image=sandbox_image, command=["bash", "-c", script], egress_allow=allow, limits=Limits(timeout=60)
    )
    out = []
    with sandbox.run(spec) as run:
        out = [line.text for line in run if line.stream == "stdout"]
    assert run.outcome.kind is OutcomeKind.OK, run.outcome
    text = "\n".join(out)
    assert "hello from the allowlisted server" in text
    assert f"http://not-allowed.example.test:{port}/ 403" in text
    assert f"http://127.0.0.1:{redis_port}/ 403" in text
    assert f"http://127.0.0.2:{port}/ 403" in text
    assert f"http://{host_ip}:{port}/ 403" in text
    assert f"https://127.0.0.1:{redis_port}/ 000" in text  # CONNECT refused: no tunnel
    assert "DIRECT-FAILED" in text
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        assert f"{var}=http://127.0.0.1:3128" in text
    assert "NODE_USE_ENV_PROXY=1" in text
    log = "\n".join(sandbox.egress.decisions(docker_client, parse_allowlist(allow)))
    assert f"TCP_MISS/200 GET http://127.0.0.1:{port}/" in log
    assert f"TCP_DENIED/403 GET http://not-allowed.example.test:{port}/" in log
    assert f"TCP_DENIED/403 CONNECT 127.0.0.1:{redis_port}" in log


def test_redis_unreachable_even_if_running(sandbox, sandbox_image):
    """Whatever listens on the host (here Redis, when there is one) stays out of reach."""
    try:
        redis.Redis(port=6379, socket_connect_timeout=1).ping()
        present = "Redis answers on the host"
    except redis.exceptions.ConnectionError:
        present = "no Redis on the host"
    spec = SandboxSpec(
        image=sandbox_image,
        command=[
            "bash",
            "-c",
            "timeout 3 bash -c 'echo PING > /dev/tcp/127.0.0.1/6379' && echo REACHED || echo BLOCKED",
        ],
        egress_allow=("127.0.0.1:1",),  # even with the proxy mounted
    )
    with sandbox.run(spec) as run:
        text = "\n".join(line.text for line in run)
    print(present)
    assert "BLOCKED" in text and "REACHED" not in text
