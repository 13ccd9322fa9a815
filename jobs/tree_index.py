"""Which files and definitions a snapshot holds: the index citations resolve names against.

Answers name code by a bare file name (`blueprints.py`), a partial path
(`json/provider.py`) or an identifier (`DefaultJSONProvider`,
`Blueprint._check_setup_finished`); jobs/citations.py links one only when it names exactly
one file, or exactly one definition, of the tree the agent read. This module knows which:

- the tree's regular files, from one walk (no symlinks, no ``.git``);
- its definitions, from Universal Ctags (``ctags``, the Debian package
  ``universal-ctags``) run once over the tree: each one's path, line and qualified name
  (ctags' scope, e.g. ``Blueprint`` + ``_check_setup_finished``), for the programming
  languages in ``LANGUAGES`` (not prose or data: a Markdown heading is no definition).

Built once per snapshot (a commit and its deny variant: jobs/repos/snapshot.py) and kept
in Redis (``keys.tree_index``, compressed, ``INDEX_TTL``), so every question on that commit
shares one build. Bounded: at most ``MAX_FILES`` files and ``MAX_DEFINITIONS`` definitions
(past either, that half of the index is *unknown*, never partial: a partial list would make
an ambiguous name look unique), ``BUILD_SECONDS`` for the whole build, files above
``MAX_SOURCE_BYTES`` not parsed. No ctags, or a ctags that fails: symbols stay unknown (one
log line), files still resolve; nothing here ever fails an answer.

The tree is the repository's, i.e. anyone's: ctags runs with ``--options=NONE`` (no
``.ctags.d`` of the tree's, nor of anyone's home, can add options such as an output
file), ``--links=no``, a clean environment, under ``prlimit`` (address space, CPU time),
on a list of files this module walked itself, and what it prints is kept only for paths
of that list.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import LockError, RedisError

from jobs import keys, spawning

log = logging.getLogger(__name__)

MAX_FILES = 100_000
MAX_DEFINITIONS = 400_000
MAX_SOURCE_BYTES = 1 << 20  # larger files are generated or minified: not parsed
BUILD_SECONDS = 60.0  # the walk and ctags together; a question waits at most about this once per commit
CTAGS_MEMORY = 1 << 30  # address space ctags may use
INDEX_TTL = 24 * 3600  # renewed by every question that uses it
MAX_BLOB = 16 << 20  # compressed; a larger index is used by its question but not kept
VERSION = 1  # of the stored format

# Universal Ctags' names of the programming languages whose definitions count; prose,
# markup and data (Markdown, reST, JSON, YAML, HTML, CSS, Make...) do not. Those this
# ctags does not know are left out (``ctags --list-languages``).
LANGUAGES = (
    "Ada",
    "C",
    "C#",
    "C++",
    "Clojure",
    "CUDA",
    "D",
    "Eiffel",
    "Elixir",
    "Elm",
    "EmacsLisp",
    "Erlang",
    "Fortran",
    "Go",
    "Haskell",
    "Haxe",
    "Java",
    "JavaScript",
    "Julia",
    "Kotlin",
    "Lisp",
    "Lua",
    "MatLab",
    "ObjectiveC",
    "OCaml",
    "Pascal",
    "Perl",
    "PHP",
    "PowerShell",
    "Protobuf",
    "Python",
    "R",
    "Ruby",
    "Rust",
    "Scala",
    "Scheme",
    "Sh",
    "Swift",
    "Tcl",
    "TypeScript",
    "Vala",
    "Verilog",
    "SystemVerilog",
    "VHDL",
    "Zephir",
)
# Tags that name something defined elsewhere (an import, an alias) or too local to cite.
_NOT_DEFINITIONS = frozenset({"unknown", "local", "parameter", "label", "receiver", "packageName"})
# A definition inside a function (a closure, a test's throw-away class) cannot be named
# from outside it: counted, it would only make the real one look ambiguous.
_LOCAL_SCOPES = frozenset(
    {
        "function",
        "func",
        "member",
        "method",
        "singletonMethod",
        "subroutine",
        "procedure",
        "constructor",
        "getter",
        "setter",
        "generator",
        "accessor",
    }
)
_SCOPE_SEPARATOR = re.compile(r"::|\.|#|/")


@dataclass(frozen=True)
class Definition:
    """One definition: where it is, and its name qualified by its scope."""

    path: str
    line: int
    parts: tuple[str, ...]  # e.g. ("Blueprint", "_check_setup_finished")


def split_name(name: str) -> tuple[str, ...]:
    """``Blueprint._check_setup_finished``, ``ns::Class::m``, ``Class#m`` -> its parts."""
    return tuple(p for p in _SCOPE_SEPARATOR.split(name) if p)


@dataclass(frozen=True)
class TreeIndex:
    """A tree's files and definitions; ``None`` for a half that is unknown (too large,
    no ctags, a failed build): then nothing resolves through it."""

    files: tuple[str, ...] | None = None
    definitions: tuple[Definition, ...] | None = None
    _by_name: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def file_named(self, written: str) -> str | None:
        """The one file whose path is ``written`` or ends with ``/written`` (a bare name
        such as ``blueprints.py``, or a partial path such as ``json/provider.py``); None
        when no file or several do."""
        parts = written.split("/")
        if self.files is None or not written or any(p in {"", ".", ".."} for p in parts):
            return None
        found = [p for p in self._files_by_basename().get(parts[-1], ()) if p == written or p.endswith("/" + written)]
        return found[0] if len(found) == 1 else None

    def definition(self, written: str) -> Definition | None:
        """The one definition ``written`` names: its name, or its name qualified by the
        end of its scope (``Blueprint._check_setup_finished``, ``T.M``); None when none or
        several do."""
        memo: dict[str, Definition | None] = self._by_name.setdefault("resolved", {})
        if written not in memo:  # an answer may name one symbol thousands of times
            memo[written] = self._definition(written)
        return memo[written]

    def _definition(self, written: str) -> Definition | None:
        parts = split_name(written)
        if self.definitions is None or not parts:
            return None
        # Or by its module's path, given at least two of its names ("flask.json.dumps",
        # not "json.dumps": one module name is as often another package's, the stdlib's json).
        found = {
            (d.path, d.line): d
            for d in self._definitions_by_name().get(parts[-1], ())
            if d.parts[-len(parts) :] == parts
            or (
                len(parts) - len(d.parts) >= 2
                and parts[-len(d.parts) :] == d.parts
                and _module(d.path)[-(len(parts) - len(d.parts)) :] == parts[: -len(d.parts)]
            )
        }
        return next(iter(found.values())) if len(found) == 1 else None

    def _files_by_basename(self) -> dict[str, list[str]]:
        if "files" not in self._by_name:
            table: dict[str, list[str]] = {}
            for path in self.files or ():
                table.setdefault(path.rsplit("/", 1)[-1], []).append(path)
            self._by_name["files"] = table
        return self._by_name["files"]

    def _definitions_by_name(self) -> dict[str, list[Definition]]:
        if "definitions" not in self._by_name:
            table: dict[str, list[Definition]] = {}
            for definition in self.definitions or ():
                table.setdefault(definition.parts[-1], []).append(definition)
            self._by_name["definitions"] = table
        return self._by_name["definitions"]

    # ------------------------------------------------------------------ storage

    def dumps(self) -> bytes:
        defs = None if self.definitions is None else [[d.path, d.line, list(d.parts)] for d in self.definitions]
        data = {"v": VERSION, "files": None if self.files is None else list(self.files), "definitions": defs}
        return zlib.compress(json.dumps(data, separators=(",", ":")).encode(), 6)

    @classmethod
    def loads(cls, blob: bytes) -> TreeIndex | None:
        """The index stored as ``blob``, or None (another format, or damaged)."""
        try:
            data = json.loads(zlib.decompress(blob))
            if data.get("v") != VERSION:
                return None
            files, defs = data["files"], data["definitions"]
            return cls(
                files=None if files is None else tuple(files),
                definitions=None if defs is None else tuple(Definition(p, int(n), tuple(q)) for p, n, q in defs),
            )
        except (zlib.error, ValueError, KeyError, TypeError):
            return None


def _module(path: str) -> tuple[str, ...]:
    """A file's module path: ``src/flask/json/provider.py`` -> (src, flask, json, provider);
    a package's own file (``__init__.py``, ``index.js``, ``mod.rs``) is its directory."""
    parts = path.rsplit(".", 1)[0].split("/") if "." in path.rsplit("/", 1)[-1] else path.split("/")
    return tuple(parts[:-1] if parts[-1] in {"__init__", "index", "mod"} else parts)


# ---------------------------------------------------------------------- building


def build_index(root: Path, ctags: str | None = None, seconds: float = BUILD_SECONDS) -> TreeIndex:
    """Walk ``root`` and run ctags over it, within ``seconds`` in all. ``ctags``: the
    program (default: ``ctags`` on PATH)."""
    deadline = time.monotonic() + seconds
    files = _walk(str(root), deadline)
    if files is None:
        log.warning(
            "tree index: more than %d files (or %.0f s) in %s: bare names and symbols stay plain",
            MAX_FILES,
            seconds,
            root,
        )
        return TreeIndex()
    definitions = _definitions(str(root), files, ctags or shutil.which("ctags"), deadline)
    return TreeIndex(files=tuple(path for path, _ in files), definitions=definitions)


def _walk(root: str, deadline: float) -> list[tuple[str, int]] | None:
    """Every regular file under ``root`` (relative path, size), not following symlinks
    and skipping ``.git``; None past ``MAX_FILES`` or the deadline."""
    found: list[tuple[str, int]] = []
    pending = [""]
    while pending:
        if time.monotonic() > deadline:
            return None
        relative = pending.pop()
        try:
            entries = list(os.scandir(os.path.join(root, relative) if relative else root))
        except OSError:
            continue
        for entry in entries:
            path = f"{relative}/{entry.name}" if relative else entry.name
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                if entry.name != ".git":
                    pending.append(path)
            elif stat.S_ISREG(info.st_mode):
                found.append((path, info.st_size))
                if len(found) > MAX_FILES:
                    return None
    found.sort()
    return found


@functools.cache
def _languages(ctags: str) -> str | None:
    """The ``--languages`` value for this ctags, or None when it is no Universal Ctags."""
    try:
        version = spawning.run([ctags, "--version"], capture_output=True, text=True, timeout=10, env=_ENV)
        listed = spawning.run(
            [ctags, "--options=NONE", "--list-languages"], capture_output=True, text=True, timeout=10, env=_ENV
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if "Universal Ctags" not in version.stdout or listed.returncode != 0:
        return None
    known = {line.split()[0] for line in listed.stdout.splitlines() if line.strip() and "[disabled]" not in line}
    return ",".join(language for language in LANGUAGES if language in known) or None


_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8"}


def _definitions(
    root: str, files: list[tuple[str, int]], ctags: str | None, deadline: float
) -> tuple[Definition, ...] | None:
    if ctags is None:
        log.warning("tree index: no ctags on PATH (install universal-ctags): symbols in answers stay plain")
        return None
    languages = _languages(ctags)
    if languages is None:
        log.warning("tree index: %s is not Universal Ctags: symbols in answers stay plain", ctags)
        return None
    listed = {path for path, size in files if size <= MAX_SOURCE_BYTES}
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", errors="surrogateescape", suffix=".files") as names:
        # Paths as ctags will print them back (relative to its working directory, the root).
        names.write("".join(f"{path}\n" for path in sorted(listed) if "\n" not in path))
        names.flush()
        argv = [
            ctags,
            "--options=NONE",
            "--links=no",
            "--recurse=no",
            f"--languages={languages}",
            "--output-format=json",
            "--fields=+n-P",
            "--sort=no",
            "-f",
            "-",
            "-L",
            names.name,
        ]
        prlimit = shutil.which("prlimit")
        if prlimit:
            cpu = max(1, int(deadline - time.monotonic()) + 1)
            argv = [prlimit, f"--as={CTAGS_MEMORY}", f"--cpu={cpu}", "--", *argv]
        return _run_ctags(argv, root, listed, deadline)


def _run_ctags(argv: list[str], root: str, listed: set[str], deadline: float) -> tuple[Definition, ...] | None:
    try:
        proc = spawning.start(
            argv, cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_ENV
        )
    except OSError as exc:
        log.warning("tree index: cannot run ctags (%s): symbols in answers stay plain", exc)
        return None
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), proc.kill)
    timer.start()
    found: list[Definition] = []
    complete = True
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            definition = _parse_tag(line, listed)
            if definition is None:
                continue
            found.append(definition)
            if len(found) > MAX_DEFINITIONS:
                complete = False
                proc.kill()
                break
        proc.wait()
    finally:
        timer.cancel()
        if proc.stdout is not None:
            proc.stdout.close()
    if not complete or proc.returncode != 0:
        why = f"more than {MAX_DEFINITIONS} definitions" if not complete else f"ctags exited {proc.returncode}"
        if proc.returncode and proc.returncode < 0 and complete:
            why = "ctags ran out of time or memory"
        log.warning("tree index: %s in %s: symbols in answers stay plain", why, root)
        return None
    return tuple(found)


def _parse_tag(line: bytes, listed: set[str]) -> Definition | None:
    try:
        tag = json.loads(line)
    except ValueError:
        return None
    if not isinstance(tag, dict) or tag.get("_type") != "tag" or tag.get("path") not in listed:
        return None
    name, number = tag.get("name"), tag.get("line")
    if not isinstance(name, str) or not isinstance(number, int) or number < 1:
        return None
    if tag.get("kind") in _NOT_DEFINITIONS or "nameref" in tag or tag.get("scopeKind") in _LOCAL_SCOPES:
        return None
    scope = tag.get("scope")
    parts = (*split_name(scope), name) if isinstance(scope, str) else (name,)
    return Definition(path=tag["path"], line=number, parts=parts)


# ---------------------------------------------------------------------- sharing


def shared_index(redis: Redis, snapshot: Path, build: Callable[[Path], TreeIndex] = build_index) -> TreeIndex:
    """The index of the snapshot at ``snapshot`` (``<snapshots>/<repo>/<commit>-<variant>``),
    from Redis, or built once (under a lock, so questions arriving together build it once)
    and stored for the next question. Redis failing: built here, not kept."""
    key = keys.tree_index(f"{snapshot.parent.name}/{snapshot.name}")
    try:
        stored = _stored(redis, key)
        if stored is not None:
            return stored
        lock = redis.lock(f"{key}:build", timeout=BUILD_SECONDS * 2, blocking_timeout=BUILD_SECONDS + 5)
        if not lock.acquire():  # another process is still building it: this answer does without
            log.warning("tree index of %s: still being built elsewhere; bare names and symbols stay plain", snapshot)
            return TreeIndex()
        try:
            stored = _stored(redis, key)
            if stored is not None:
                return stored
            index = build(snapshot)
            blob = index.dumps()
            if len(blob) <= MAX_BLOB:
                redis.set(key, blob, ex=INDEX_TTL)
            else:
                log.warning("tree index of %s: %d bytes, not kept", snapshot, len(blob))
            return index
        finally:
            with contextlib.suppress(LockError):
                lock.release()
    except RedisError as exc:
        log.warning("tree index of %s: Redis unavailable (%s); built for this answer only", snapshot, exc)
        return build(snapshot)


def _stored(redis: Redis, key: str) -> TreeIndex | None:
    blob = redis.getex(key, ex=INDEX_TTL)
    return TreeIndex.loads(blob) if isinstance(blob, bytes) else None


def lazy(make: Callable[[], TreeIndex]) -> Callable[[], TreeIndex]:
    """``make`` called once, on first use: an answer that names nothing needing the index
    never builds it."""
    return functools.cache(make)
