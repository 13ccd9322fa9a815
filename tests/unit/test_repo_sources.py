"""Repository configuration, snapshots, readability and locks, with real git (no Docker)."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs.repos import DEFAULT_DENY, RepoRef, parse_repos, resolve_repo
from jobs.repos.locks import WouldBlock, locked
from jobs.repos.readability import Unreadable, live_tree
from jobs.repos.snapshot import Snapshots, denied, write_tree
from jobs.settings import JobSettings, Settings
from tests.integration.git_helpers import Upstream, git

# --- configuration ----------------------------------------------------------------------


def problem(value: object) -> str:
    with pytest.raises(ValidationError) as info:
        JobSettings(repos=value)
    (error,) = info.value.errors()
    assert error["type"] == "askbox_repos" and "\n" not in error["msg"]
    return error["msg"]


def test_plain_paths_and_urls_keep_working():
    repos = JobSettings(
        repos='{"web": "/srv/repos/web", "api": "https://git.example.com/org/api.git", '
        '"ops": "git@git.example.com:org/ops.git", "lib": "file:///srv/git/lib.git"}'
    ).repos
    assert repos["web"].path == Path("/srv/repos/web") and repos["web"].url is None
    assert repos["api"].url == "https://git.example.com/org/api.git"
    assert repos["ops"].url == "git@git.example.com:org/ops.git" and repos["lib"].url == "file:///srv/git/lib.git"
    assert JobSettings(repos={"demo": Path("/tmp")}).repos["demo"].path == Path("/tmp")  # as the tests build it


def test_json_syntax_error_says_where_it_breaks():
    message = problem('{"web": "/srv/repos/web",, "api": "/x"}')
    assert message.startswith("not valid JSON:") and "line 1 column 26" in message and '/repos/web",,' in message


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"url": "https://bob:hunter2@git.example.com/web.git"}, "must not hold credentials"),
        ({"url": "https://x-access-token@git.example.com/web.git"}, "must not hold credentials"),
        ({"url": "ftp://git.example.com/web.git"}, "use https://, ssh://, file:// or user@host:path"),
        ({"url": "https://git.example.com/web.git", "colour": "red"}, 'unknown key "colour"'),
        ({"path": "srv/web"}, "must be absolute"),
        ({"path": "/srv/web", "url": "https://git.example.com/web.git"}, 'exactly one of "path" and "url"'),
        ({"path": "/srv/web", "branch": "main"}, "only apply to a git remote"),
        ({"url": "https://git.example.com/web.git", "branch": "-x"}, "not a branch name"),
        ({"url": "http://git.example.com/web.git", "token_env": "WEB_TOKEN"}, "never sent over plain http://"),
        ({"url": "https://git.example.com/web.git", "token": "ghp_x"}, 'name its variable with "token_env"'),
        ({"url": "https://git.example.com/web.git", "token_env": "not a name"}, "not an environment variable name"),
        ({"url": "https://git.example.com/web.git", "ssh_key": "/k"}, "ssh_key needs an ssh://"),
        ({"url": "https://git.example.com/web.git", "deny": ["/etc/passwd"]}, "a glob relative to the repository"),
        (42, "must be a path, a URL or an object"),
    ],
)
def test_entry_errors_name_the_entry(entry, expected):
    message = problem({"alpha": "/srv/alpha", "web": entry})
    assert message.startswith("entry 'web': ") and expected in message, message
    assert "Value error" not in message and "hunter2" not in message


def test_a_toml_file_adds_repositories_and_its_errors_name_file_and_entry(tmp_path, monkeypatch):
    file = tmp_path / "repos.toml"
    file.write_text(
        '[web]\nurl = "https://git.example.com/org/web.git"\nbranch = "main"\n\n'
        '[docs]\npath = "/srv/docs"\ndeny = ["private/*"]\n'
    )
    monkeypatch.setenv("ASKBOX_REPOS", '{"api": "/srv/api"}')
    monkeypatch.setenv("ASKBOX_REPOS_FILE", str(file))
    repos = JobSettings().repos
    assert sorted(repos) == ["api", "docs", "web"] and repos["web"].branch == "main"
    assert repos["docs"].deny == ("private/*",)

    def error_of() -> str:
        with pytest.raises(ValidationError) as info:
            JobSettings()
        (error,) = info.value.errors()
        assert error["loc"] == ("repos_file",)
        return error["msg"]

    file.write_text('[web]\nurl = "https://git.example.com/org/web.git\n')
    assert error_of().startswith(f"{file} is not valid TOML: ") and "line 2" in error_of()
    file.write_text('[web]\nurl = "ftp://git.example.com/web.git"\n')
    assert (
        error_of()
        == f"{file}: entry 'web': url 'ftp://git.example.com/web.git': use https://, ssh://, file:// or user@host:path"
    )
    file.write_text('[api]\npath = "/srv/other"\n')
    assert error_of() == f"{file}: api also in ASKBOX_REPOS; name each repository once"


def test_the_cli_shows_one_line_without_echoing_the_value(monkeypatch, capsys):
    from bot.cli import main

    monkeypatch.setenv("ASKBOX_REPOS", '{"web": {"url": "https://bob:hunter2@host/web.git"}}')
    assert main(["ask", "--inline", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("askbox: invalid ASKBOX_REPOS: entry 'web': the url must not hold credentials"), err
    assert "\n" not in err and "hunter2" not in err


def test_token_is_read_from_the_named_variable_and_redacted(monkeypatch):
    monkeypatch.setenv("WEB_TOKEN", "tok-0123456789")
    monkeypatch.setenv(
        "ASKBOX_REPOS",
        '{"web": {"url": "https://git.example.com/org/web.git", "token_env": "WEB_TOKEN",'
        ' "web_url": "https://code.example.com/{path}"}}',
    )
    settings = Settings.load()
    entry = settings.jobs.repos["web"]
    assert entry.token.get_secret_value() == "tok-0123456789" and "tok-0123456789" not in repr(entry)
    assert "tok-0123456789" in settings.secret_values()  # so every log and answer is redacted of it
    ref = resolve_repo("web", settings.jobs.repos, allow_paths=False)
    assert ref.remote == "https://git.example.com/org/web.git" and ref.web_url == "https://code.example.com/{path}"
    assert "tok-0123456789" not in ref.model_dump_json()
    monkeypatch.delenv("WEB_TOKEN")  # the bot has no token: its settings still load
    assert Settings.load().jobs.repos["web"].token is None


def test_remote_is_credential_free_and_none_for_paths():
    assert RepoRef(name="x", url="ssh://git@host:2222/org/x.git").remote == "ssh://git@host:2222/org/x.git"
    assert RepoRef(name="x", url="git@host:org/x.git").remote == "git@host:org/x.git"
    assert RepoRef(name="x", path=Path("/srv/x")).remote is None


def test_deny_extends_the_defaults():
    repos = parse_repos({"web": {"path": "/srv/web", "deny": ["config/*.secret", "*.pem"]}})
    ref = resolve_repo("web", repos, allow_paths=False)
    assert ref.deny[: len(DEFAULT_DENY)] == DEFAULT_DENY and ref.deny.count("*.pem") == 1
    assert "config/*.secret" in ref.deny


def test_denylist_matching():
    deny = DEFAULT_DENY + ("config/*.secret",)
    for path in [
        ".env",
        "app/.env.production",
        "certs/server.pem",
        "home/id_rsa",
        "home/id_rsa.pub",
        "tls/x.key",
        "config/db.secret",
        ".env.d/anything/below",
    ]:
        assert denied(path, deny), path
    for path in ["src/env.py", "keys.txt", "docs/keyboard.md", "other/config/db.secret", "environment"]:
        assert not denied(path, deny), path


# --- snapshots --------------------------------------------------------------------------


@pytest.fixture()
def upstream(tmp_path: Path) -> Upstream:
    up = Upstream(tmp_path / "up")
    up.commit(
        {
            "README.md": "# demo\n",
            "src/app.py": "print(1)\n",
            ".env": "SECRET=s3cret\n",
            "deploy/id_rsa": "PRIVATE\n",
            "tls/server.key": "KEY\n",
            "config/ok.txt": "fine\n",
        }
    )
    (up.work / "run.sh").write_text("#!/bin/sh\n")
    (up.work / "run.sh").chmod(0o755)
    os.symlink("src/app.py", up.work / "link.py")
    git(up.work, "add", "-A")
    git(up.work, "commit", "-q", "-m", "more")
    git(up.work, "push", "-q", str(up.bare), "main")
    return up


def tree_of(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in root.rglob("*") if not p.is_symlink()}


def test_write_tree_leaves_out_secrets_and_git_and_is_world_readable(upstream, tmp_path):
    os.umask(0o077)  # a worker's umask must not make files the sandbox cannot read
    try:
        dest = tmp_path / "snap"
        dest.mkdir()
        commit = git(upstream.work, "rev-parse", "HEAD")
        write_tree(upstream.bare, commit, dest, DEFAULT_DENY)
    finally:
        os.umask(0o022)
    assert tree_of(dest) == {
        "README.md": 0o644,
        "src": 0o755,
        "src/app.py": 0o644,
        "config": 0o755,
        "config/ok.txt": 0o644,
        "run.sh": 0o755,
    }
    assert os.readlink(dest / "link.py") == "src/app.py"
    assert not (dest / ".git").exists() and not (dest / "deploy").exists()


def test_snapshots_are_shared_and_removed_only_when_unused(upstream, tmp_path):
    store = Snapshots(tmp_path / "snapshots")
    ref = RepoRef(name="web", url=upstream.file_url)
    commit = git(upstream.work, "rev-parse", "HEAD")
    with store.lease(ref, upstream.bare, commit) as first, store.lease(ref, upstream.bare, commit) as second:
        assert first == second and (first / "README.md").read_text() == "# demo\n"
        assert store.cleanup(idle=0) == []  # in use: kept, however old
        assert first.is_dir()
    removed = store.cleanup(idle=3600)
    assert removed == [] and first.is_dir()  # unused, but not for long enough
    assert store.cleanup(idle=0) == [first] and not first.exists()
    with store.lease(ref, upstream.bare, commit) as again:  # made again when asked for again
        assert (again / "src" / "app.py").is_file()
    newer = upstream.commit({"src/app.py": "print(2)\n"})
    with store.lease(ref, upstream.bare, newer) as later:  # a second commit shares what did not change
        assert (later / "README.md").stat().st_ino == (again / "README.md").stat().st_ino
        assert (later / "src" / "app.py").read_text() == "print(2)\n" != (again / "src" / "app.py").read_text()
        assert stat.S_IMODE((later / "README.md").stat().st_mode) == 0o644
    assert len(store.cleanup(idle=0)) == 2
    assert list((store.staging / ref.slug / ".blobs").iterdir()) == []  # in no snapshot: swept


def test_history_snapshot_has_a_credential_free_git_of_the_pinned_commit(tmp_path):
    # A history without secrets: one that ever held a denied path is refused (test_repo_hostile.py).
    upstream = Upstream(tmp_path / "up")
    upstream.commit({"README.md": "# demo\n"})
    first = upstream.commit({"src/app.py": "print(1)\n"})
    upstream.commit({"later.txt": "not yet\n"})  # after the pinned commit: not in its history
    ref = RepoRef(name="web", url=upstream.file_url, history=True)
    with Snapshots(tmp_path / "s").lease(ref, upstream.bare, first) as root:
        assert git(root, "-c", "safe.directory=*", "log", "--format=%H", "-1") == first
        assert git(root, "-c", "safe.directory=*", "remote") == ""
        assert "url" not in (root / ".git" / "config").read_text()
        assert git(root, "-c", "safe.directory=*", "for-each-ref", "--format=%(refname)") == "refs/heads/askbox"


# --- readability ------------------------------------------------------------------------


def test_a_0700_directory_is_named_with_its_mode_and_the_fix(tmp_path):
    locked_dir = tmp_path / "private"
    locked_dir.mkdir(mode=0o700)
    locked_dir.chmod(0o700)
    with pytest.raises(Unreadable) as info:
        live_tree(locked_dir, DEFAULT_DENY)
    message = str(info.value)
    assert str(locked_dir) in message and "mode 0700" in message and f"chmod o+rx {locked_dir}" in message
    assert "uid 10001" in message


def test_an_unreadable_file_inside_is_named_and_masked_ones_do_not_count(tmp_path):
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    root.chmod(0o755)
    (root / "src").chmod(0o755)
    (root / "src" / "ok.py").write_text("x")
    (root / "src" / "ok.py").chmod(0o644)
    (root / ".env").write_text("SECRET")
    (root / ".env").chmod(0o600)  # unreadable, but hidden anyway: no complaint
    (root / ".env.d").mkdir()
    tree = live_tree(root, DEFAULT_DENY)
    assert tree.masked_files == (".env",) and tree.masked_dirs == (".env.d",)
    (root / "src" / "private.py").write_text("x")
    (root / "src" / "private.py").chmod(0o600)
    with pytest.raises(Unreadable, match=r"private\.py \(mode 0600.*chmod -R o\+rX"):
        live_tree(root, DEFAULT_DENY)


# --- locks ------------------------------------------------------------------------------


def test_a_forked_child_does_not_inherit_a_threads_lock(tmp_path):
    lock = tmp_path / "m.lock"
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with locked(lock):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    pid = os.fork()
    if pid == 0:  # the work-horse: once the parent lets go, the lock is free for it
        time.sleep(0.5)
        try:
            with locked(lock, blocking=False):
                os._exit(0)
        except WouldBlock:
            os._exit(1)
        os._exit(2)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child kept the parent's lock"


# --- git's environment ------------------------------------------------------------------


def test_credentials_reach_git_only_through_its_environment(tmp_path):
    from pydantic import SecretStr

    from jobs.repos.git import ASKPASS, TOKEN_VAR, remote_env

    https = RepoRef(name="web", url="https://git.example.com/org/web.git", token=SecretStr("tok-secret"))
    env = remote_env(https, tmp_path)
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["GIT_CONFIG_GLOBAL"] == os.devnull
    assert env[TOKEN_VAR] == "tok-secret" and Path(env["GIT_ASKPASS"]).read_text() == ASKPASS
    assert "tok-secret" not in ASKPASS and stat.S_IMODE(Path(env["GIT_ASKPASS"]).stat().st_mode) == 0o700
    key = tmp_path / "deploy key; rm -rf ~"  # git runs GIT_SSH_COMMAND through a shell
    ssh = RepoRef(name="ops", url="git@git.example.com:org/ops.git", ssh_key=key)
    command = remote_env(ssh, tmp_path)["GIT_SSH_COMMAND"]
    assert f"-i '{key}'" in command and "IdentitiesOnly=yes" in command and "BatchMode=yes" in command
    assert TOKEN_VAR not in remote_env(ssh, tmp_path)
