"""Running git for askbox: argv lists, no shell, no prompts, credentials only in git's environment.

A repository is data, never code: nothing any repository's config, hooks or attributes
say can make git run a command, whoever wrote them. Every git askbox runs goes through
``run_git`` (or ``git_argv`` + ``base_env`` for a streamed one), which:

- reads no user or system config (``GIT_CONFIG_GLOBAL=/dev/null``, ``GIT_CONFIG_NOSYSTEM``,
  ``HOME``/``XDG_CONFIG_HOME`` nowhere): a credential helper or URL rewrite of the host's
  never applies, nor is anything stored;
- allows only the transports askbox's URLs use (``GIT_ALLOW_PROTOCOL``: file, https,
  http, ssh), whatever a config says: ``ext::`` (a command) and ``fd::`` never run;
- overrides, on the command line (which wins over a repository's config), every key that
  names a command git might run for what askbox asks of it: hooks, fsmonitor, credential
  helpers, ssh (``GIT_SSH_COMMAND``), signature checks (gpg), pager, automatic gc; and
  never fetches a missing object lazily (``GIT_NO_LAZY_FETCH``: a partial clone's
  promisor remote is a URL from its config);
- works only in repositories askbox made itself (mirrors, snapshots, and the object view
  of a local checkout: jobs/repos/checkout.py), named with ``--git-dir``, so there is no
  discovery and no ``safe.directory`` exception to make. A local checkout is read as
  files (its HEAD, jobs/repos/head.py; its config with ``git config --file``) and as
  objects (its object store, through a view of askbox's own): git opens it as a
  repository only to resolve a reftable HEAD (jobs/repos/checkout.py), under the
  overrides above.

Credentials:

- A token reaches git through ``GIT_ASKPASS``: a fixed script that prints the variable
  ``ASKBOX_GIT_TOKEN`` of git's own environment. It is never in argv (``ps`` shows argv),
  in a URL, in the mirror's config or in a message; git's stderr is scrubbed of it anyway.
- An ssh deploy key through ``GIT_SSH_COMMAND`` with ``IdentitiesOnly=yes`` (only that key
  is offered) and ``BatchMode=yes`` (no passphrase prompt); host keys are learnt on first
  use into ``known_hosts`` next to the mirrors.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from jobs import spawning
from jobs.repos.resolve import RepoRef

GIT = "git"
TOKEN_VAR = "ASKBOX_GIT_TOKEN"
# Prints the user name for git's "Username for ..." prompt and the token for the password.
# GitHub, GitLab, Gitea and Bitbucket all take a token as the password of any user name.
ASKPASS = f"""#!/bin/sh
case "$1" in
  Username*) echo x-access-token ;;
  *) printf '%s\\n' "${TOKEN_VAR}" ;;
esac
"""


# The transports of the URLs config.py accepts (https, http, ssh and git+ssh, scp-style,
# file) and of a local path (file).
PROTOCOLS = ("file", "https", "http", "ssh")
# Command-line config: it wins over any repository's own. Each names (or turns on) a
# command git could otherwise take from a config file; none changes what askbox reads.
OVERRIDES = (
    "core.hooksPath=/dev/null",  # no hook of any repository
    "core.fsmonitor=false",  # a command run to list changed files
    "credential.helper=",  # the empty value clears the list: no helper command
    "core.pager=cat",
    "log.showSignature=false",  # no gpg.program run by `git log`
    "gc.auto=0",  # no `gc --auto` detached into the background (it would outlive a work-horse)
    "maintenance.auto=false",
    # Lists an alternate's refs without running git in the alternate's repository (a local
    # checkout, behind an object view), which would read its config: `true` lists none.
    "core.alternateRefsCommand=true",
    "protocol.allow=never",  # GIT_ALLOW_PROTOCOL says the same; this for a git that ignores it
    *(f"protocol.{name}.allow=always" for name in PROTOCOLS),
    *(f"protocol.{name}.allow=never" for name in ("ext", "fd")),
)


class GitFailed(RuntimeError):
    """git exited non-zero; the message is its last stderr line, scrubbed of secrets."""


def git_argv() -> list[str]:
    """``git`` and the overrides, to which a command and its arguments are added."""
    argv = [GIT]
    for override in OVERRIDES:
        argv += ["-c", override]
    return argv


def base_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "XDG_CONFIG_HOME": "/nonexistent",
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_ALLOW_PROTOCOL": ":".join(PROTOCOLS),  # overrides any protocol.* config
        "GIT_NO_LAZY_FETCH": "1",
        "GIT_NO_REPLACE_OBJECTS": "1",  # refs/replace/* never make one object read as another
        "GIT_SSH_COMMAND": "ssh",  # wins over core.sshCommand (a command from a config file)
        "GIT_PAGER": "cat",
        "GIT_ASKPASS": "/bin/false",  # no token: a 401 fails at once instead of prompting
        "SSH_ASKPASS": "/bin/false",
    }


def remote_env(repo: RepoRef, state_dir: Path) -> dict[str, str]:
    """git's environment for talking to ``repo``'s remote."""
    env = base_env()
    if repo.token is not None:
        askpass = state_dir / "askpass.sh"
        if not askpass.exists():
            tmp = state_dir / f".askpass-{os.getpid()}-{threading.get_ident()}"
            spawning.write_program(tmp, ASKPASS)  # never open for writing across a fork
            tmp.replace(askpass)
        env.update({"GIT_ASKPASS": str(askpass), TOKEN_VAR: repo.token.get_secret_value()})
    if repo.ssh_key is not None:
        known_hosts = state_dir / "known_hosts"
        ssh = [
            "ssh",
            "-i",
            str(repo.ssh_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-F",
            os.devnull,
        ]
        env["GIT_SSH_COMMAND"] = shlex.join(ssh)  # git runs it through a shell: every word quoted
    return env


def run_git(
    args: list[str],
    env: dict[str, str] | None = None,
    timeout: float = 120,
    secrets: tuple[str, ...] = (),
    stdout: int | None = subprocess.PIPE,
) -> subprocess.CompletedProcess:
    """``git <args>``; raises ``GitFailed`` with git's own words when it fails."""
    try:
        done = spawning.run(
            [*git_argv(), *args],
            timeout=timeout,
            env=env or base_env(),
            stdout=stdout,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise GitFailed(f"git {args[0]} took longer than {timeout:.0f} s") from None
    except OSError as exc:
        raise GitFailed(f"cannot run git: {exc}") from None
    if done.returncode != 0:
        raise GitFailed(_reason(done.stderr.decode(errors="replace"), secrets) or f"git {args[0]} failed")
    return done


def git_records(args: list[str], timeout: float = 600) -> Iterator[bytes]:
    """The NUL-separated records of ``git <args>`` (a ``-z`` command) as git writes them:
    memory stays bounded by one chunk, whatever the size of the output. Raises
    ``GitFailed`` (git's own words) when it fails or outlives ``timeout``."""
    with tempfile.TemporaryFile() as stderr:
        proc = spawning.start(
            [*git_argv(), *args], env=base_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
        )
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            proc.kill()

        killer = threading.Timer(timeout, kill)
        killer.start()
        assert proc.stdout is not None
        try:
            pending = b""
            while chunk := proc.stdout.read(1 << 16):
                *records, pending = (pending + chunk).split(b"\0")
                yield from records
            if pending:
                yield pending
        finally:
            proc.stdout.close()
            code = proc.wait()
            killer.cancel()
        if code != 0:
            if timed_out.is_set():
                raise GitFailed(f"git {args[0]} took longer than {timeout:.0f} s")
            stderr.seek(0)
            raise GitFailed(_reason(stderr.read().decode(errors="replace"), ()) or f"git {args[0]} failed")


def _reason(stderr: str, secrets: tuple[str, ...]) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("hint:")]
    fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
    # git's first fatal line is the specific one ("... does not appear to be a git
    # repository"); later ones are generic ("Could not read from remote repository.").
    reason = (fatal or lines[-1:] or [""])[0].removeprefix("fatal: ").removeprefix("error: ").rstrip(".")
    for secret in secrets:
        if secret:
            reason = reason.replace(secret, "***")
    return reason[:300]
