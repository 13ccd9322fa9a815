from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import jobs.repos.head  # noqa: F401 - patched below
from jobs import repos
from jobs.repos import RepoRef, UnknownRepo, head_commit, resolve_repo
from jobs.repos.checkout import OutsideCheckout
from tests.integration.git_helpers import GIT_ENV

# --- resolve_repo -----------------------------------------------------------------------


@pytest.fixture()
def configured(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "web").mkdir()
    (tmp_path / "api").mkdir()
    return {"web": tmp_path / "web", "api": tmp_path / "api"}


def test_configured_name(configured):
    assert resolve_repo("web", configured, allow_paths=False) == RepoRef(name="web", path=configured["web"])
    assert resolve_repo("  api ", configured, allow_paths=False).name == "api"


def test_unknown_name_lists_known_ones(configured):
    with pytest.raises(UnknownRepo) as info:
        resolve_repo("wbe", configured, allow_paths=True)
    message = str(info.value)
    assert "'wbe'" in message and "api, web" in message
    assert info.value.known == ["api", "web"]
    assert isinstance(info.value, ValueError)


def test_nothing_configured_names_the_variable():
    with pytest.raises(UnknownRepo, match="ASKBOX_REPOS"):
        resolve_repo("web", {}, allow_paths=False)


def test_configured_name_wins_over_directory(configured, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    named = {"./elsewhere": configured["web"]}
    assert resolve_repo("./elsewhere", named, allow_paths=True).path == configured["web"]


def test_path_accepted_only_when_allowed(configured, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(UnknownRepo, match="not accepted") as info:
        resolve_repo(str(other), configured, allow_paths=False)
    assert "api, web" in str(info.value)
    ref = resolve_repo(str(other), configured, allow_paths=True)
    assert ref.path == other.resolve() and ref.name == str(other.resolve())


def test_bare_word_is_never_taken_as_a_path(configured, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "other").mkdir()
    with pytest.raises(UnknownRepo, match="Unknown repository 'other'"):
        resolve_repo("other", configured, allow_paths=True)


def test_missing_path_is_named(configured, tmp_path):
    missing = tmp_path / "absent"
    with pytest.raises(UnknownRepo, match="No such directory") as info:
        resolve_repo(str(missing), configured, allow_paths=True)
    assert str(missing) in str(info.value)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(UnknownRepo, match="Not a directory"):
        resolve_repo(str(a_file), configured, allow_paths=True)


def test_no_name_uses_default_or_the_only_repo(configured):
    assert resolve_repo(None, configured, allow_paths=False, default="api").name == "api"
    assert resolve_repo("", {"web": configured["web"]}, allow_paths=False).name == "web"
    with pytest.raises(UnknownRepo, match="No repository given") as info:
        resolve_repo(None, configured, allow_paths=False)
    assert "api, web" in str(info.value)
    with pytest.raises(UnknownRepo, match="ASKBOX_REPOS"):
        resolve_repo(None, {}, allow_paths=False)


# --- head_commit ------------------------------------------------------------------------

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git binary needed to build test repositories")


def git(cwd: Path, *args: str) -> str:
    # GIT_ENV: isolated from the developer's config (no signing, hooks or default-branch surprises).
    result = subprocess.run([GIT, *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def rev_parse(path: Path) -> str:
    return git(path, "rev-parse", "HEAD")


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for n in range(2):
        (root / "f.txt").write_text(f"{n}\n")
        git(root, "add", "f.txt")
        git(root, "commit", "-q", "-m", f"commit {n}")
    return root


@needs_git
def test_branch_head_from_loose_ref(checkout):
    assert (checkout / ".git" / "refs" / "heads" / "main").is_file()
    assert head_commit(checkout) == rev_parse(checkout)


@needs_git
def test_packed_refs(checkout):
    git(checkout, "tag", "-a", "v1", "-m", "annotated, so packed-refs has a ^peeled line")
    git(checkout, "pack-refs", "--all")
    assert not (checkout / ".git" / "refs" / "heads" / "main").exists()
    assert "^" in (checkout / ".git" / "packed-refs").read_text()
    assert head_commit(checkout) == rev_parse(checkout)


@needs_git
def test_detached_head(checkout):
    first = git(checkout, "rev-parse", "HEAD~1")
    git(checkout, "checkout", "-q", "--detach", first)
    assert head_commit(checkout) == first == rev_parse(checkout)


@needs_git
def test_a_worktree_is_refused_its_git_directory_is_elsewhere(checkout, tmp_path):
    # A linked worktree's git directory is in the main checkout: askbox reads a checkout's
    # git data only from inside it (jobs/repos/checkout.py), so it says so instead.
    first = git(checkout, "rev-parse", "HEAD~1")
    tree = tmp_path / "tree"
    git(checkout, "worktree", "add", "-q", "-b", "side", str(tree), first)
    assert (tree / ".git").is_file()
    with pytest.raises(
        OutsideCheckout,
        match=r"git directory \(from its \.git file\) is .*/checkout/\.git/"
        r"worktrees/tree, outside the checkout .*configure the main checkout",
    ):
        head_commit(tree)
    assert head_commit(checkout) == rev_parse(checkout) != first


@needs_git
def test_symbolic_ref_chain(checkout):
    git(checkout, "symbolic-ref", "refs/heads/alias", "refs/heads/main")
    git(checkout, "symbolic-ref", "HEAD", "refs/heads/alias")
    assert head_commit(checkout) == rev_parse(checkout)


@needs_git
def test_branch_without_commits_is_none(tmp_path):
    git(tmp_path, "init", "-q", "-b", "main")
    assert head_commit(tmp_path) is None


def test_not_a_checkout(tmp_path):
    (tmp_path / "README").write_text("plain directory")
    assert head_commit(tmp_path) is None
    assert head_commit(tmp_path / "absent") is None


def test_garbage_git_dir_is_none(tmp_path):
    (tmp_path / ".git").write_text("not a gitdir line")
    assert head_commit(tmp_path) is None
    (tmp_path / ".git").write_text("gitdir: /nowhere/at/all")
    assert head_commit(tmp_path) is None
    (tmp_path / ".git").unlink()
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_bytes(b"\xff\xfe garbage")
    assert head_commit(tmp_path) is None
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/../../../etc/passwd\n")
    assert head_commit(tmp_path) is None


def test_reftable_is_left_to_git(tmp_path, monkeypatch):
    # git here may be older than reftable (2.45); check only that such repos go to git.
    (tmp_path / ".git" / "reftable").mkdir(parents=True)
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/.invalid\n")
    monkeypatch.setattr(repos.head, "_head_from_git", lambda path: "a" * 40 if path == tmp_path else None)
    assert head_commit(tmp_path) == "a" * 40
