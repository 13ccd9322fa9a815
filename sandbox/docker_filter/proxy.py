"""The docker-filter's server: one request per connection, checked, then relayed.

Requests are parsed with h11 (python-hyper's HTTP/1.1 state machine: framing,
Content-Length vs. chunked, header syntax), never by hand. aiohttp's server is not used
because Docker's attach and exec start *hijack* the connection: the daemon answers
``101 UPGRADED`` (or 200) and from then on the socket carries raw stdin/stdout, which an
HTTP server framework will not hand over. So the loop below is asyncio streams + h11:

1. read one request with h11 (body capped, chunked bodies decoded);
2. ``policy.decide`` it; for a route naming a container or exec, ask the daemon (aiohttp
   client on the real socket) for its labels and use the full id it returns, so the
   call acts on exactly the container that was checked;
3. send the daemon a request *re-serialised* by h11 from what was checked (canonical
   path, re-encoded query, the parsed JSON body with a Content-Length,
   ``Connection: close``), never the caller's bytes;
4. relay the daemon's answer back byte for byte. Only on hijacked routes are the
   caller's later bytes forwarded (they are the container's stdin, not HTTP); on any
   other route they are dropped, so nothing can be pipelined past the check.

A container's start is checked once more (``check_at_start``: its bind mounts, on the
daemon's own record of them). ``POST /askbox/<action>`` is the filter's own, never
forwarded: ``endpoints.py`` seals snapshots and makes egress socket directories for a
worker that has them read-only.

A refusal is a Docker-style ``{"message": "askbox docker-filter: <why>"}`` (docker-py
raises it as ``APIError`` with that explanation), logged with the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
from http import HTTPStatus
from pathlib import Path
from urllib.parse import quote

import aiohttp
import h11

from sandbox.docker_filter import endpoints
from sandbox.docker_filter.policy import Decision, Policy, Refused, check_at_start, check_target, decide
from sandbox.errors import FILTER_PREFIX as PREFIX

log = logging.getLogger(__name__)

CHUNK = 65536
LINGER_BYTES = 16 << 20
LINGER_SECONDS = 2.0
_FORWARDED_HEADERS = {b"user-agent"}
_CONTAINER_IN_PATH = re.compile(r"^((?:/v[0-9.]+)?/containers/)[^/]+")


class DaemonAnswer(Exception):
    """The daemon's own error about a named container or exec (e.g. 404), passed on as is."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class DockerFilter:
    """Listens on ``socket_path``, forwards allowed calls to the daemon at ``upstream``."""

    def __init__(self, policy: Policy, socket_path: Path, upstream: Path, max_body: int = 1 << 20) -> None:
        self.policy = policy
        self.socket_path = socket_path
        self.upstream = upstream
        self.max_body = max_body
        self._server: asyncio.AbstractServer | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.socket_path), limit=CHUNK)
        self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.upstream)))
        os.chmod(self.socket_path, 0o660)  # owner (root) and group: the worker's side, not everyone
        log.info("docker-filter listening on %s, forwarding to %s", self.socket_path, self.upstream)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._session is not None:
            await self._session.close()
        self.socket_path.unlink(missing_ok=True)

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then remove the socket."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.close()

    # -- one connection ----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        try:
            request, body = await self._read_request(conn, reader, writer)
            try:
                method, target = request.method.decode("ascii"), request.target.decode("ascii")
            except UnicodeDecodeError:
                raise Refused("request line is not ASCII") from None
            if target.startswith(endpoints.PREFIX):
                answer = await asyncio.to_thread(endpoints.serve, self.policy, method, target, body)
                log.info("docker-filter did %s %s", method, target[:200])
                await self._answer(conn, writer, 200, answer)
                return
            decision = decide(self.policy, method, target, body)
            decision = await self._resolve(decision)
            if decision.summary:
                log.info("docker-filter allowed %s %s (%s)", method, decision.path, decision.summary)
            await self._forward(method, request, decision, conn, reader, writer)
        except Refused as exc:
            where = (
                f"{request.method.decode(errors='replace')} {request.target.decode(errors='replace')[:300]}"
                if request
                else "request"
            )
            log.warning("docker-filter refused %s: %s", where, exc)
            await self._answer(conn, writer, exc.status, {"message": PREFIX + str(exc)}, reader)
        except DaemonAnswer as exc:
            await self._answer(conn, writer, exc.status, {"message": str(exc)})
        except h11.RemoteProtocolError as exc:
            log.warning("docker-filter refused a malformed request: %s", exc)
            await self._answer(
                conn, writer, exc.error_status_hint, {"message": PREFIX + f"malformed HTTP ({exc})"}, reader
            )
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the caller went away
        except Exception:  # one broken connection must not stop the filter
            log.exception("docker-filter: error serving a request")
            await self._answer(conn, writer, 500, {"message": PREFIX + "internal error (see its log)"})
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[h11.Request, bytes]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(CHUNK)
                conn.receive_data(data)  # b"" is EOF: h11 then raises or reports a closed peer
                if not data and conn.their_state is h11.CLOSED:
                    raise ConnectionError("closed")
                continue
            if isinstance(event, h11.Request):
                request = event
                names = [name for name, _ in event.headers]
                if b"content-length" in names and b"transfer-encoding" in names:
                    raise Refused("both Content-Length and Transfer-Encoding: a request smuggling attempt", status=400)
                length = dict(event.headers).get(b"content-length")
                if length is not None and int(length) > self.max_body:
                    raise Refused(f"request body of {int(length)} bytes is over {self.max_body}", status=413)
                if conn.they_are_waiting_for_100_continue:
                    writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body:
                    raise Refused(f"request body is over {self.max_body} bytes", status=413)
            elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                assert request is not None
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed")

    async def _resolve(self, decision: Decision) -> Decision:
        """Check the container a route names (or an exec's container); pin its full id."""
        if decision.exec_id is not None:
            status, info = await self._inspect(f"/exec/{decision.exec_id}/json")
            container = info.get("ContainerID", "")
            if status == 200:
                status, info = await self._inspect(f"/containers/{quote(container)}/json")
            if status != 200:
                raise DaemonAnswer(status, info.get("message", f"daemon answered {status}"))
            check_target(self.policy, decision, container, (info.get("Config") or {}).get("Labels"))
            return decision
        if decision.container is None:
            return decision
        status, info = await self._inspect(f"/containers/{quote(decision.container)}/json")
        if status != 200:
            # NotFound stays NotFound: the runner and reaper treat a gone container as gone.
            raise DaemonAnswer(status, info.get("message", f"daemon answered {status}"))
        check_target(self.policy, decision, decision.container, (info.get("Config") or {}).get("Labels"))
        if decision.recheck_mounts:
            check_at_start(self.policy, info)
        full = info["Id"]
        path = _CONTAINER_IN_PATH.sub(lambda m: m[1] + full, decision.path, count=1)
        return Decision(
            path=path, query=decision.query, body=decision.body, hijack=decision.hijack, summary=decision.summary
        )

    async def _inspect(self, path: str) -> tuple[int, dict]:
        assert self._session is not None
        try:
            async with self._session.get("http://docker" + path) as response:
                try:
                    return response.status, await response.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    return response.status, {"message": (await response.text())[:300]}
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: Exception) -> DaemonAnswer:
        # Not the filter's refusal (no PREFIX): the worker reports the daemon as down.
        return DaemonAnswer(
            502, f"the Docker daemon behind askbox docker-filter is not reachable at {self.upstream}: {exc}"
        )

    async def _forward(
        self,
        method: str,
        request: h11.Request,
        decision: Decision,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        headers = [(b"Host", b"docker")]
        headers += [(k, v) for k, v in request.headers if k in _FORWARDED_HEADERS]
        if decision.hijack:
            headers += [(b"Connection", b"Upgrade"), (b"Upgrade", b"tcp")]
        else:
            headers.append((b"Connection", b"close"))
        if decision.body:
            headers.append((b"Content-Type", b"application/json"))
        if decision.body or method in {"POST", "DELETE"}:
            headers.append((b"Content-Length", str(len(decision.body)).encode()))
        client = h11.Connection(h11.CLIENT)
        out = client.send(h11.Request(method=method, target=decision.target(), headers=headers))
        if decision.body:
            out += client.send(h11.Data(data=decision.body))
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(self.upstream), limit=CHUNK)
        except OSError as exc:
            raise self._unreachable(exc) from exc
        try:
            up_writer.write(out)
            await up_writer.drain()
            if decision.hijack and not await _taken_over(client, up_reader, writer):
                return  # the daemon answered with an error: the caller's bytes are not stdin
            downstream = asyncio.create_task(_pipe(up_reader, writer))
            if decision.hijack:
                early = conn.trailing_data[0]  # stdin the caller sent right behind the request
                upstream = asyncio.create_task(_pipe(reader, up_writer, early, half_close=True))
            else:
                # Whatever else the caller sends is read and dropped: never forwarded, and not
                # left unread (closing on unread bytes resets the connection, losing the answer).
                upstream = asyncio.create_task(_discard(reader))
            # The daemon's answer runs to its end (the container's output until it stops); a
            # caller that half-closes still reads it, one that left ends it at the next write.
            with contextlib.suppress(ConnectionError):
                await downstream
            upstream.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await upstream
        finally:
            up_writer.close()

    async def _answer(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        payload: dict,
        reader: asyncio.StreamReader | None = None,
    ) -> None:
        if conn.our_state not in {h11.IDLE, h11.SEND_RESPONSE}:
            return
        body = json.dumps(payload).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close")]
        try:
            reason = HTTPStatus(status).phrase.encode() if status in HTTPStatus._value2member_map_ else b""
            writer.write(conn.send(h11.Response(status_code=status, headers=headers, reason=reason)))
            writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            if reader is not None:
                # A lingering close: read (and drop) what the caller is still sending, e.g. the
                # rest of an oversized body, so that closing does not reset the connection and
                # lose the answer before the caller reads it.
                writer.write_eof()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(_discard(reader, LINGER_BYTES), LINGER_SECONDS)
        except (ConnectionError, h11.LocalProtocolError):
            pass


async def _taken_over(client: h11.Connection, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Relay the daemon's answer to a hijacking call up to where it takes the connection
    over (101 UPGRADED): True. An error before the takeover (exec start of an exec gone
    since the filter looked it up: 404) is an ordinary response on a connection the daemon
    keeps open for the next request, so the caller's bytes must not follow it there: relay
    it to its end and return False. (Attach errors, e.g. a paused container, come after
    the takeover, as a response written on the raw connection, which the daemon closes.)"""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            data = await up_reader.read(CHUNK)
            client.receive_data(data)
            writer.write(data)  # verbatim: docker-py reads the daemon's own head
            continue
        if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            await writer.drain()
            return True
        if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            await writer.drain()
            return False


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes = b"", half_close: bool = False
) -> None:
    if first:
        writer.write(first)
    while True:
        data = await reader.read(CHUNK)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    if half_close and writer.can_write_eof():
        writer.write_eof()  # the caller closed stdin: the daemon closes the container's


async def _discard(reader: asyncio.StreamReader, limit: int | None = None) -> None:
    read = 0
    while (limit is None or read < limit) and (data := await reader.read(CHUNK)):
        read += len(data)
