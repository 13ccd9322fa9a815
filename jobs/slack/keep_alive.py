"""slack_sdk's WebClient over kept-alive connections: one per thread and host, reused.

slack_sdk's sync client calls ``urllib.request.urlopen`` for every request: a new TCP (and
TLS) connection per Web API call, which under a burst costs the bot and the worker more
than the call itself. slack_sdk has no pooled sync transport, and urllib none at all, so
this one method (``_perform_urllib_http_request_internal``, the client's only I/O; its
retries, 429 handling and errors stay slack_sdk's) is replaced with ``http.client``
connections kept per thread (a connection serves one request at a time).

What the retry rules rely on (jobs/slack/web_api.py) is kept exactly as urllib shapes it:
a failure before the whole request went out raises ``URLError`` (safe to send again), a
failure while waiting for the answer comes out raw (Slack may have acted), an HTTP
error status raises ``HTTPError`` with the headers and body. A kept connection the server
has closed while it sat idle would turn the next post into one of those raw failures
(sent, no answer), so a connection is checked before reuse (readable while idle: closed
or garbage; urllib3's check) and dropped after ``IDLE`` seconds unused; what is left is
the tiny window of any network failure, handled as every ambiguous post is.
"""

from __future__ import annotations

import io
import select
import threading
import time
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request

from slack_sdk import WebClient

IDLE = 20.0  # seconds a kept connection may sit unused (well under common servers' keep-alive)


class _Kept(threading.local):
    def __init__(self) -> None:
        self.connections: dict[tuple[str, str, int], tuple[HTTPConnection, float]] = {}


class KeepAliveWebClient(WebClient):
    """A ``WebClient`` reusing its connections (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept = _Kept()
        self.connections_opened = 0  # for tests and benchmarks

    def _perform_urllib_http_request_internal(self, url: str, req: Request) -> dict[str, Any]:
        parts = urlsplit(url)
        if self.proxy is not None or parts.scheme not in ("http", "https") or not parts.hostname:
            return super()._perform_urllib_http_request_internal(url, req)
        key = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        connection = self._connection(key)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request(req.get_method(), path, body=req.data, headers=dict(req.header_items()))
        except (OSError, HTTPException) as exc:
            connection.close()
            raise URLError(exc) from exc  # not sent whole: Slack cannot have acted on it
        try:
            response = connection.getresponse()
            body = response.read()
        except BaseException:
            connection.close()
            raise  # sent: Slack may have acted (web_api.ambiguous)
        if response.will_close:
            connection.close()
        else:
            self._kept.connections[key] = (connection, time.monotonic())
        headers = response.headers
        if response.status >= 400:
            raise HTTPError(url, response.status, response.reason, headers, io.BytesIO(body))
        if headers.get_content_type() == "application/gzip":
            return {"status": response.status, "headers": headers, "body": body}
        return {
            "status": response.status,
            "headers": headers,
            "body": body.decode(headers.get_content_charset() or "utf-8"),
        }

    def _connection(self, key: tuple[str, str, int]) -> HTTPConnection:
        kept = self._kept.connections.pop(key, None)
        if kept is not None:
            connection, since = kept
            if time.monotonic() - since < IDLE and not _dropped(connection):
                return connection
            connection.close()
        scheme, host, port = key
        self.connections_opened += 1
        if scheme == "https":
            return HTTPSConnection(host, port, timeout=self.timeout, context=self.ssl)
        return HTTPConnection(host, port, timeout=self.timeout)


def _dropped(connection: HTTPConnection) -> bool:
    """An idle connection with something to read has been closed by the server (EOF) or
    holds bytes nobody asked for: either way it cannot carry the next request."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
