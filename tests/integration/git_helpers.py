"""Real git repositories for tests: a working copy to commit in, bare remotes, and git's
own smart HTTP server (``git http-backend`` as CGI) behind a token check on 127.0.0.1.

The HTTP front is written here because the standard library has no CGI server any more
(http.server's CGIHTTPRequestHandler is deprecated and runs scripts from a directory);
all of git's protocol is ``git http-backend``'s.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@dataclass
class Upstream:
    """A working copy whose ``main`` is pushed to a bare repository ``<root>/<name>.git``."""

    root: Path
    name: str = "web"

    def __post_init__(self) -> None:
        self.work = self.root / f"{self.name}-work"
        self.bare = self.root / f"{self.name}.git"
        self.work.mkdir(parents=True)
        git(self.work, "init", "-q", "-b", "main")
        git(self.root, "init", "-q", "--bare", "-b", "main", str(self.bare))

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        """Write ``files`` (relative path -> text), commit all, push; returns the commit."""
        for rel, text in files.items():
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", message)
        git(self.work, "push", "-q", str(self.bare), "main")
        return git(self.work, "rev-parse", "HEAD")

    @property
    def file_url(self) -> str:
        return self.bare.as_uri()


@dataclass
class GitHTTPServer:
    """``git http-backend`` over HTTP on 127.0.0.1, serving ``root``; every request must
    carry HTTP Basic auth whose password is ``token`` (any user name, as the forges do)."""

    root: Path
    token: str
    broken: bool = False  # answer 503 to everything: a remote that is down
    stall: float = 0.0  # seconds each fetch's first request (the ref advertisement) waits: a slow remote
    requests: list[tuple[str, str, bool]] = field(default_factory=list)  # (method, path, authorised)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                authorised = server._authorised(self.headers.get("Authorization"))
                server.requests.append((self.command, self.path, authorised))
                if server.broken:
                    return self._reply(503, {"Content-Type": "text/plain"}, b"down for maintenance\n")
                if server.stall and self.command == "GET" and "/info/refs" in self.path and authorised:
                    time.sleep(server.stall)
                if not authorised:
                    return self._reply(401, {"WWW-Authenticate": 'Basic realm="git"'}, b"")
                url = urlsplit(self.path)
                env = {
                    "PATH": os.environ["PATH"],
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "GIT_CONFIG_NOSYSTEM": "1",
                    "GIT_CONFIG_GLOBAL": os.devnull,
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": url.path,
                    "QUERY_STRING": url.query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_USER": "git",
                    "REMOTE_ADDR": "127.0.0.1",
                }
                if self.headers.get("Git-Protocol"):
                    env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
                if self.headers.get("Content-Encoding"):
                    env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
                done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
                head, _, payload = done.stdout.partition(b"\r\n\r\n")
                headers: dict[str, str] = {}
                status = 200
                for line in head.decode(errors="replace").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.strip().split()[0])
                    elif name:
                        headers[name.strip()] = value.strip()
                self._reply(status, headers, payload)

            def _reply(self, status: int, headers: dict[str, str], payload: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except ConnectionError:
                    pass  # the client gave up (a fetch timed out, its worker stopped)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            _, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return password == self.token

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}.git"

    def __enter__(self) -> GitHTTPServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# Every hook git knows (githooks(5)): a repository's own hooks must never run.
HOOKS = (
    "applypatch-msg",
    "pre-applypatch",
    "post-applypatch",
    "pre-commit",
    "pre-merge-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "pre-rebase",
    "post-checkout",
    "post-merge",
    "pre-push",
    "pre-receive",
    "update",
    "proc-receive",
    "post-receive",
    "post-update",
    "reference-transaction",
    "push-to-checkout",
    "pre-auto-gc",
    "post-rewrite",
    "sendemail-validate",
    "fsmonitor-watchman",
    "post-index-change",
)


def arm(repo: Path, markers: Path, origin: str | None = None) -> list[str]:
    """Arms ``repo`` (a checkout or a bare repository) as an attacker who can write it
    would: every config key known to make git run a command (directly, through an
    ``include``, or a URL rewrite to ``ext::``), every hook, filter and diff drivers on all
    files, and a partial clone's promisor remote that runs a command when an object is
    missing. Each leaves a file named after itself in ``markers``, which must stay empty.
    ``origin`` becomes ``remote.origin.url`` (for citations). Returns what was armed."""
    git_dir = repo / ".git" if (repo / ".git").is_dir() else repo
    bin_dir = markers.with_name(markers.name + "-bin")
    hooks = markers.with_name(markers.name + "-hooks")
    for directory in (markers, bin_dir, hooks, git_dir / "hooks", git_dir / "info"):
        directory.mkdir(parents=True, exist_ok=True)
    assert " " not in str(markers), "ext:: commands below are space-separated"

    def script(name: str) -> str:
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\ntouch '{markers}/{name}'\ncat\n")
        path.chmod(0o755)
        return str(path)

    for hook in HOOKS:
        for where in (git_dir / "hooks", hooks):
            (where / hook).write_text(f"#!/bin/sh\ntouch '{markers}/hook-{hook}'\n")
            (where / hook).chmod(0o755)
    ext = f"ext::sh -c touch% {markers}/ext-"
    settings = {
        "core.repositoryformatversion": "1",
        "core.hooksPath": str(hooks),
        "core.fsmonitor": script("core.fsmonitor"),
        "core.sshCommand": script("core.sshCommand"),
        "core.gitProxy": script("core.gitProxy"),
        "core.askPass": script("core.askPass"),
        "core.pager": script("core.pager"),
        "core.editor": script("core.editor"),
        "core.alternateRefsCommand": script("core.alternateRefsCommand"),
        "credential.helper": "!" + script("credential.helper"),
        "diff.external": script("diff.external"),
        "diff.evil.textconv": script("diff.evil.textconv"),
        "diff.evil.command": script("diff.evil.command"),
        "filter.evil.smudge": script("filter.evil.smudge"),
        "filter.evil.clean": script("filter.evil.clean"),
        "filter.evil.process": script("filter.evil.process"),
        "filter.evil.required": "true",
        "merge.evil.driver": script("merge.evil.driver"),
        "log.showSignature": "true",
        "gpg.program": script("gpg.program"),
        "gpg.ssh.program": script("gpg.ssh.program"),
        "pager.log": script("pager.log"),
        "sequence.editor": script("sequence.editor"),
        "uploadpack.packObjectsHook": script("uploadpack.packObjectsHook"),
        "uploadpack.allowAnySHA1InWant": "true",
        "trace2.normalTarget": str(markers / "trace2"),  # writes a file, if ever read from here
        "protocol.allow": "always",
        "protocol.ext.allow": "always",
        "protocol.fd.allow": "always",
        "remote.origin.uploadpack": script("remote.origin.uploadpack"),
        "remote.origin.receivepack": script("remote.origin.receivepack"),
        # A partial clone: a missing object is fetched from this remote, i.e. runs it.
        "extensions.partialClone": "evil",
        "remote.evil.url": f"{ext}promisor",
        "remote.evil.promisor": "true",
        "core.worktree": "/",
    }
    if origin:
        settings["remote.origin.url"] = origin
    # Written from outside the repository: the test's own git never reads what it arms.
    config = ["config", "--file", str(git_dir / "config")]
    for key, value in settings.items():
        git(bin_dir, *config, key, value)
    for prefix in ("/", "file://", "https://", "http://", "ssh://", "git@"):
        for rewrite in ("insteadOf", "pushInsteadOf"):
            # "% #": the rest of the rewritten URL is a comment to the shell.
            git(bin_dir, *config, "--add", f"url.{ext}{rewrite}% #.{rewrite}", prefix)
    # The same again from an included file, as a second way in.
    included = bin_dir / "included.gitconfig"
    included.write_text(
        f"[core]\n\tfsmonitor = {script('include.core.fsmonitor')}\n"
        f"\tsshCommand = {script('include.core.sshCommand')}\n"
        f"[diff]\n\texternal = {script('include.diff.external')}\n"
    )
    git(bin_dir, *config, "include.path", str(included))
    git(bin_dir, *config, "includeIf.gitdir:/.path", str(included))
    (git_dir / "info" / "attributes").write_text("* filter=evil diff=evil merge=evil\n")
    return sorted(settings) + [f"hooks/{hook}" for hook in HOOKS]
