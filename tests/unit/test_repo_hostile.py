"""A repository is data, never code: hostile checkouts and remotes against askbox's own
repository pipeline (pin, snapshot with and without history, the refresher, citations),
with real git and no Docker. tests/integration/test_hostile_repos.py has the sandbox's
side: what an agent can read of such repositories.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from jobs.repos import DEFAULT_DENY, RepoRef, RepoUnavailable, mount, parse_repos, pin, refresh_all
from jobs.repos.readability import live_tree
from jobs.repos.snapshot import denied, write_tree
from jobs.settings import JobSettings
from jobs.web_host import checkout_remote
from tests.integration.git_helpers import GIT_ENV, Upstream, arm, git

ORIGIN = "https://github.com/acme/evil.git"
# The secret spellings of the review (issue 17), each with content a test can look for.
SPELLINGS = {
    ".ENV": "TOKEN=upper-env",
    "ID_RSA": "upper-id-rsa",
    "deploy/server.PEM": "mixed-pem",
    ".npmrc": "npm-token",
    ".netrc": "netrc-password",
    ".git-credentials": "https://u:git-cred@host",
    ".aws/credentials": "aws-secret",
    "certs/client.p12": "p12-bundle",
    "certs/client.pfx": "pfx-bundle",
    "keys/id_dsa": "dsa-key",
    "vault.kdbx": "keepass-db",
    "app/.Env.Production": "nested-env",
    ".SSH/config": "ssh-dir",
}


def markers_left(markers: Path) -> list[str]:
    return sorted(p.name for p in markers.iterdir())


@pytest.fixture()
def hostile(tmp_path: Path) -> tuple[Upstream, Path]:
    """A checkout (and its bare remote) with a clean history, both armed: every way known
    to make git run a command from a repository leaves a file in ``markers``."""
    up = Upstream(tmp_path / "up", "evil")
    up.commit({"README.md": "# evil\n", "src/app.py": "print(1)\n"}, "first")
    up.commit({"src/app.py": "print(2)\n", ".gitattributes": "* filter=evil diff=evil\n"}, "second")
    markers = tmp_path / "markers"
    arm(up.work, markers, origin=ORIGIN)
    arm(up.bare, markers)
    return up, markers


def test_the_armed_repository_runs_code_when_git_opens_it_naively(hostile, tmp_path):
    """The control: the attack is real. git opening the checkout as a repository (as the
    old `history` push did, or a `status`) runs what its config says."""
    up, markers = hostile
    env = {
        "PATH": os.environ["PATH"],
        "HOME": "/nonexistent",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    dest = tmp_path / "dest.git"
    git(tmp_path, "init", "-q", "--bare", str(dest))
    subprocess.run(
        [
            "git",
            "-c",
            "safe.directory=*",
            "-c",
            "core.hooksPath=/dev/null",
            "--git-dir",
            str(up.work / ".git"),
            "push",
            "--quiet",
            "--no-verify",
            str(dest),
            "HEAD:refs/heads/x",
        ],
        env=env,
        capture_output=True,
        check=False,
    )
    assert "ext-pushInsteadOf" in markers_left(markers)
    subprocess.run(["git", "-C", str(up.work), "status"], env=env, capture_output=True, check=False)
    assert "include.core.fsmonitor" in markers_left(markers)


def test_a_hostile_checkout_or_remote_runs_nothing_through_pin_snapshot_history_refresh_and_citations(
    hostile, tmp_path
):
    up, markers = hostile
    mirrors, snapshots = tmp_path / "mirrors", tmp_path / "snapshots"
    head = git(up.work, "rev-parse", "HEAD")
    for history in (False, True):
        for ref in (
            RepoRef(name=f"local-{history}", path=up.work, history=history),
            RepoRef(name=f"remote-{history}", url=up.file_url, history=history),
        ):
            refresh_all([ref], mirrors, snapshots, refresh=0, idle=3600)
            pinned = pin(ref, mirrors, refresh=0)
            assert pinned.commit == head
            with mount(pinned, snapshots) as workspace:
                assert (workspace.root / "src" / "app.py").read_text() == "print(2)\n"
                assert (workspace.root / ".git").is_dir() == history
                if history:
                    log = git(workspace.root, "-c", "safe.directory=*", "log", "--format=%s")
                    assert log.splitlines() == ["second", "first"]
                    config = (workspace.root / ".git" / "config").read_text()
                    assert "evil" not in config and "ext::" not in config
    assert checkout_remote(up.work) == ORIGIN  # citations: the origin, read as data
    assert markers_left(markers) == []


def test_a_partial_clone_never_fetches_an_object_it_lacks(hostile, tmp_path):
    """A missing object of a partial clone is fetched from its promisor remote, a URL from
    its config (here ext::, a command): askbox's git never fetches one."""
    up, markers = hostile
    blob = git(up.work, "rev-parse", "HEAD:README.md")
    (up.work / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    (up.bare / "objects" / blob[:2] / blob[2:]).unlink()
    ref = RepoRef(name="evil", path=up.work)
    with pytest.raises(RepoUnavailable, match=f"Cannot make a snapshot of evil at .*{blob}"):
        with mount(pin(ref, tmp_path / "mirrors", refresh=0), tmp_path / "snapshots"):
            pass
    remote = RepoRef(name="evil-remote", url=up.file_url)
    with pytest.raises(RepoUnavailable, match="Cannot fetch the repository evil-remote"):
        pin(remote, tmp_path / "mirrors", refresh=0)
    assert markers_left(markers) == []


# --- history ----------------------------------------------------------------------------


def test_history_is_refused_when_any_commit_holds_a_denied_path(tmp_path):
    up = Upstream(tmp_path / "up", "hist")
    leaked = up.commit({"README.md": "# hist\n", ".ENV": "TOKEN=in-history\n"}, "oops")
    git(up.work, "rm", "-q", ".ENV")
    git(up.work, "commit", "-q", "-m", "remove the secret")
    git(up.work, "push", "-q", str(up.bare), "main")
    ref = RepoRef(name="hist", url=up.file_url, history=True)
    pinned = pin(ref, tmp_path / "mirrors", refresh=0)
    with pytest.raises(RepoUnavailable) as info:
        with mount(pinned, tmp_path / "snapshots"):
            pass
    message = str(info.value)
    assert f"'.ENV' (commit {leaked[:12]})" in message, message
    assert message.startswith("The repository hist has history: true") and 'remove "history"' in message
    assert "\n" not in message
    assert list((tmp_path / "snapshots" / "sealed").glob("*/*")) == []  # no snapshot was made
    # Without history the same commit is answered: the tree has no .ENV, and no .git.
    with mount(
        pin(ref.model_copy(update={"history": False}), tmp_path / "mirrors", refresh=0), tmp_path / "snapshots"
    ) as workspace:
        assert sorted(os.listdir(workspace.root)) == ["README.md"]


def test_history_is_refused_for_a_denied_path_only_a_merge_added(tmp_path):
    up = Upstream(tmp_path / "up", "merge")
    up.commit({"README.md": "# merge\n"})
    git(up.work, "checkout", "-q", "-b", "side")
    up.commit({"side.txt": "side\n"})
    git(up.work, "checkout", "-q", "main")
    git(up.work, "merge", "-q", "--no-ff", "--no-commit", "side")
    (up.work / "config").mkdir()
    (up.work / "config" / ".npmrc").write_text("//registry/:_authToken=merged\n")  # in neither parent
    git(up.work, "add", "-A")
    git(up.work, "commit", "-q", "-m", "an evil merge")
    git(up.work, "rm", "-q", "config/.npmrc")
    git(up.work, "commit", "-q", "-m", "gone again")
    git(up.work, "push", "-q", str(up.bare), "main")
    merge = git(up.work, "rev-parse", "HEAD~1")
    ref = RepoRef(name="merge", url=up.file_url, history=True)
    with pytest.raises(RepoUnavailable, match=rf"'config/\.npmrc' \(commit {merge[:12]}\)"):
        with mount(pin(ref, tmp_path / "mirrors", refresh=0), tmp_path / "snapshots"):
            pass


# --- the denylist -----------------------------------------------------------------------


def test_every_leaked_spelling_is_denied_case_insensitively():
    for path in [
        *SPELLINGS,
        ".env",
        ".Env",
        "a/b/.env.local",
        "ID_RSA.PUB",
        "home/Id_Ed25519",
        "deploy_rsa",
        "ssh/id_ecdsa_sk",
        ".ssh/authorized_keys",
        "x/.SSH/known_hosts",
        "tls/X.KEY",
        "keystore.JKS",
        "a/release.keystore",
        "_netrc",
        ".pypirc",
        "infra/.docker/config.json",
        ".kube/config",
        "prod.tfstate",
        "prod.tfstate.backup",
        "gcp/my-service-account.json",
        "client_secret_1.json",
        "credentials.json",
        "old/.bash_history",
        ".git/config",
        "sub/.GIT/HEAD",
        "certs/key.ppk",
    ]:
        assert denied(path, DEFAULT_DENY), path
    for path in [
        "src/env.py",
        "environment.yml",
        "docs/keyboard.md",
        "keys.txt",
        ".github/workflows/ci.yml",
        ".gitignore",
        "src/aws/credentials.py",
        "docs/ssh.md",
        "package.json",
        "src/config.json",
        "README.md",
        "Makefile",
    ]:
        assert not denied(path, DEFAULT_DENY), path
    assert denied(".ssh", DEFAULT_DENY, directory=True) and not denied(".ssh", DEFAULT_DENY)  # "dir/" patterns


def test_deny_patterns_only_add():
    problems = {
        "!.env": "take files back out",
        "#secret": "matches nothing",
        "a\\": "not a gitignore pattern",
        "[z-a].key": "not a gitignore pattern",
    }
    for pattern, expected in problems.items():
        with pytest.raises(ValueError) as info:
            JobSettings(repos={"web": {"path": "/srv/web", "deny": [pattern]}})
        assert expected in str(info.value) and repr(pattern) in str(info.value), str(info.value)
    repos = parse_repos({"web": {"path": "/srv/web", "deny": ["Config/*.Secret", "**/private/"]}})
    deny = DEFAULT_DENY + repos["web"].deny
    assert denied("config/db.SECRET", deny) and denied("a/b/private/x", deny) and not denied("x/config/db.secret", deny)


def test_a_snapshot_and_a_live_directory_leave_out_every_spelling(tmp_path):
    up = Upstream(tmp_path / "up", "leaky")
    commit = up.commit({"README.md": "# leaky\n", **SPELLINGS})
    dest = tmp_path / "snap"
    dest.mkdir()
    write_tree(up.bare, commit, dest, DEFAULT_DENY)
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["README.md"]
    # The same tree as a live directory: every spelling masked, as a file or a directory.
    live = up.work
    for path in [live, *live.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    tree = live_tree(live, DEFAULT_DENY)
    masked = set(tree.masked_files) | {f"{d}/" for d in tree.masked_dirs}
    for path in SPELLINGS:
        assert any(path == m or path.startswith(m) for m in masked), (path, masked)
    assert ".git/" in masked


# --- one mirror per remote --------------------------------------------------------------


def test_a_name_given_another_url_is_answered_from_the_new_remote_at_once(tmp_path):
    old = Upstream(tmp_path / "old", "web")
    old_commit = old.commit({"VERSION": "old remote\n", "old-only.txt": "only in the old remote\n"})
    new = Upstream(tmp_path / "new", "web")
    new_commit = new.commit({"VERSION": "new remote\n"})
    mirrors, snapshots = tmp_path / "mirrors", tmp_path / "snapshots"
    before = pin(RepoRef(name="web", url=old.file_url), mirrors, refresh=300)
    # The operator points "web" at another remote; the old mirror was fetched just now.
    ref = RepoRef(name="web", url=new.file_url)
    after = pin(ref, mirrors, refresh=300)
    assert (before.commit, after.commit) == (old_commit, new_commit)
    with mount(after, snapshots) as workspace:
        assert (workspace.root / "VERSION").read_text() == "new remote\n"
    assert after.git_dir != before.git_dir
    missing = subprocess.run(
        ["git", "--git-dir", str(after.git_dir), "cat-file", "-e", old_commit],
        env=GIT_ENV,
        capture_output=True,
        check=False,
    )
    assert missing.returncode != 0  # the old remote's objects are not in the new mirror
    # The refresher sweeps the old mirror once unused for long enough, never the new one.
    refresh_all([ref], mirrors, snapshots, refresh=300, idle=3600)
    assert before.git_dir is not None and before.git_dir.is_dir()
    refresh_all([ref], mirrors, snapshots, refresh=300, idle=0)
    assert not before.git_dir.exists() and after.git_dir is not None and after.git_dir.is_dir()
    assert sorted(p.name for p in mirrors.iterdir() if not p.name.startswith("askpass")) == sorted(
        [after.git_dir.name, after.git_dir.with_suffix(".json").name, after.git_dir.with_suffix(".lock").name]
    )


# --- a checkout's git data stays inside it ----------------------------------------------


@pytest.fixture()
def secret_mirror(tmp_path: Path) -> tuple[Path, str]:
    """The mirror of a repository another channel may not see: (its path, its tip)."""
    secret = Upstream(tmp_path / "secret", "vault")
    tip = secret.commit({"KEYS.md": "the launch codes\n"})
    pinned = pin(RepoRef(name="vault", url=secret.file_url), tmp_path / "mirrors", refresh=0)
    assert pinned.git_dir is not None
    return pinned.git_dir, tip


def escapes(tmp_path: Path, mirror: Path, tip: str) -> dict[str, Path]:
    """Checkouts of an open repository made to reach the secret mirror, each another way."""
    made: dict[str, Path] = {}

    def checkout(name: str) -> Path:
        root = tmp_path / "escapes" / name
        root.mkdir(parents=True)
        (root / "README.md").write_text("# open\n")
        made[name] = root
        return root

    checkout("gitdir-file").joinpath(".git").write_text(f"gitdir: {mirror}\n")
    relative = checkout("gitdir-relative")
    relative.joinpath(".git").write_text(f"gitdir: {os.path.relpath(mirror, relative)}\n")
    os.symlink(mirror, checkout("gitdir-symlink") / ".git")
    common = checkout("commondir") / ".git"  # its refs and objects are the mirror's
    common.mkdir()
    (common / "HEAD").write_text("ref: refs/askbox/tip\n")
    (common / "commondir").write_text(f"{mirror}\n")
    borrowed = checkout("alternates") / ".git"  # its own git dir, the mirror's objects
    git(borrowed.parent, "init", "-q")
    (borrowed / "HEAD").write_text(f"{tip}\n")
    (borrowed / "objects" / "info" / "alternates").write_text(f"{mirror / 'objects'}\n")
    linked = checkout("ref-symlink") / ".git"  # a branch that is the mirror's tip
    git(linked.parent, "init", "-q", "-b", "main")
    os.symlink(mirror / "refs" / "askbox" / "tip", linked / "refs" / "heads" / "main")
    return made


def test_a_checkout_whose_git_data_lies_outside_it_is_refused(tmp_path, secret_mirror):
    mirror, tip = secret_mirror
    escaped: dict[str, str] = {}
    for name, root in escapes(tmp_path, mirror, tip).items():
        ref = RepoRef(name=f"open-{name}", path=root)
        try:
            pinned = pin(ref, tmp_path / "mirrors", refresh=0)
        except RepoUnavailable as exc:
            message = str(exc)
            assert f"The repository open-{name} at {root} is refused: its " in message, message
            assert "outside the checkout" in message and "\n" not in message
            continue
        seen = ""
        if pinned.commit is not None:
            try:
                with mount(pinned, tmp_path / "snapshots") as workspace:
                    seen = " ".join(p.read_text() for p in workspace.root.rglob("*") if p.is_file())
            except RepoUnavailable as exc:
                seen = str(exc)
        escaped[name] = f"pinned {pinned.commit} (the secret's tip: {pinned.commit == tip}), read {seen!r}"
    assert escaped == {}
