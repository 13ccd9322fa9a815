"""Running git for askbox: argv lists, no shell, no prompts, credentials only in git's environment.

- No user or system config (``GIT_CONFIG_GLOBAL=/dev/null``, ``GIT_CONFIG_NOSYSTEM``): a
  credential helper or URL rewrite of the host's never applies, nor is anything stored.
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
from pathlib import Path

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


class GitFailed(RuntimeError):
    """git exited non-zero; the message is its last stderr line, scrubbed of secrets."""


def base_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ASKPASS": "/bin/false",  # no token: a 401 fails at once instead of prompting
        "SSH_ASKPASS": "/bin/false",
    }


def remote_env(repo: RepoRef, state_dir: Path) -> dict[str, str]:
    """git's environment for talking to ``repo``'s remote."""
    env = base_env()
    if repo.token is not None:
        askpass = state_dir / "askpass.sh"
        if not askpass.exists():
            tmp = state_dir / f".askpass-{os.getpid()}"
            tmp.write_text(ASKPASS)
            tmp.chmod(0o700)
            tmp.replace(askpass)
        env.update({"GIT_ASKPASS": str(askpass), TOKEN_VAR: repo.token.get_secret_value()})
    if repo.ssh_key is not None:
        known_hosts = state_dir / "known_hosts"
        ssh = ["ssh", "-i", str(repo.ssh_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
               "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known_hosts}", "-F", os.devnull]
        env["GIT_SSH_COMMAND"] = shlex.join(ssh)  # git runs it through a shell: every word quoted
    return env


def run_git(args: list[str], env: dict[str, str] | None = None, timeout: float = 120,
            secrets: tuple[str, ...] = (), stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess:
    """``git <args>``; raises ``GitFailed`` with git's own words when it fails."""
    try:
        done = subprocess.run([GIT, "-c", "safe.directory=*", "-c", "core.hooksPath=/dev/null", *args],
                              env=env or base_env(), stdout=stdout, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise GitFailed(f"git {args[0]} took longer than {timeout:.0f} s") from None
    except OSError as exc:
        raise GitFailed(f"cannot run git: {exc}") from None
    if done.returncode != 0:
        raise GitFailed(_reason(done.stderr.decode(errors="replace"), secrets) or f"git {args[0]} failed")
    return done


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
