"""The secrets denylist: which paths of a repository no sandbox ever sees.

Patterns are gitignore patterns (``pathspec``'s gitwildmatch translation, matched
case-insensitively: ``.ENV`` and ``ID_RSA`` are the files ``.env`` and ``id_rsa`` on a
case-insensitive checkout, and a secret all the same): a pattern without ``/`` matches a
name at any depth, one with ``/`` the path from the repository's root (``**/`` for any
depth), one ending in ``/`` a directory; a matching directory takes its whole subtree.

One owner for the question "is this path denied?": the snapshot's tree and history
(jobs/repos/snapshot.py) and a live directory's masks (jobs/repos/readability.py) all ask
``denied``.
"""

from __future__ import annotations

import functools
import re

from pathspec import PathSpec
from pathspec.pattern import RegexPattern
from pathspec.patterns.gitignore import GitIgnorePatternError
from pathspec.patterns.gitignore.basic import GitIgnoreBasicPattern

# Files whose purpose is to hold a credential, that repositories are known to leak. After
# gitrob's file signatures (michenriksen/gitrob, core/signatures.go) and the credential
# files of the common command-line tools; ``.git`` because a checkout's own is never data
# to show. A repository's ``deny`` adds to these; nothing takes one away (docs/repositories.md).
DEFAULT_DENY: tuple[str, ...] = (
    # environment files, templates included (real values end up in them too)
    ".env*",
    # private keys, certificates and key stores
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.pkcs12",
    "*.p8",
    "*.jks",
    "*.keystore",
    "*.keyring",
    "*.ppk",
    "*.asc",
    "*.ovpn",
    # ssh keys and directories
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*_rsa",
    "*_dsa",
    "*_ecdsa",
    "*_ed25519",
    ".ssh/",
    ".gnupg/",
    # password databases
    "*.kdb",
    "*.kdbx",
    "*.psafe3",
    "*.agilekeychain",
    "*.keychain",
    "*.keychain-db",
    "*.kwallet",
    # tools' credential files
    ".npmrc",
    ".pypirc",
    ".netrc",
    "_netrc",
    ".git-credentials",
    ".pgpass",
    ".my.cnf",
    ".htpasswd",
    ".dockercfg",
    ".s3cfg",
    ".vault-token",
    ".terraformrc",
    "terraform.rc",
    "**/.aws/credentials",
    "**/.docker/config.json",
    "**/.gem/credentials",
    "**/.kube/config",
    "kubeconfig",
    "*.kubeconfig",
    "**/.config/gh/hosts.yml",
    "**/.config/hub",
    "credentials.json",
    "credentials.xml",
    "client_secret*.json",
    "*service?account*.json",
    "application_default_credentials.json",
    # state that holds secrets in clear: terraform's, shell and database client histories
    "*.tfstate",
    "*.tfstate.*",
    "terraform.tfvars",
    ".*_history",
    ".git",
)


class BadPattern(ValueError):
    """A deny pattern that is not one (the message says why)."""


def denied(path: str, patterns: tuple[str, ...], directory: bool = False) -> bool:
    """Whether ``path`` (relative to the repository's root, ``/``-separated) is kept out;
    ``directory``: it names a directory (a pattern ending in ``/`` matches only those)."""
    return _spec(patterns).match_file(f"{path}/" if directory else path)


def check_pattern(pattern: str) -> None:
    """Raises ``BadPattern`` unless ``pattern`` denies something (for the configuration)."""
    _compile(pattern)


@functools.lru_cache(maxsize=64)
def _spec(patterns: tuple[str, ...]) -> PathSpec:
    # One compiled spec per pattern tuple: a snapshot asks it once per path of the tree.
    # The "simple" backend: the others (re2, hyperscan, when installed) take the regex
    # text and would drop the case-insensitive flag.
    return PathSpec([_compile(p) for p in patterns], backend="simple")


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> RegexPattern:
    if pattern.startswith("!"):
        raise BadPattern(
            f'deny pattern {pattern!r}: a "!" pattern would take files back out of the denylist; '
            "patterns only add to it"
        )
    try:
        regex, include = GitIgnoreBasicPattern.pattern_to_regex(pattern)
        if include is not True or regex is None:
            raise BadPattern(f'deny pattern {pattern!r} matches nothing (blank, or a "#" comment)')
        return RegexPattern(re.compile(f"(?i){regex}"), include)
    except (GitIgnorePatternError, re.error) as exc:
        raise BadPattern(f"deny pattern {pattern!r} is not a gitignore pattern ({exc})") from None
