"""The tree index (jobs/tree_index.py): a snapshot's files and definitions from a walk and
Universal Ctags; a hostile tree cannot steer ctags; past a cap a half is unknown, never partial."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from jobs import tree_index
from jobs.tree_index import Definition, TreeIndex, build_index, split_name


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    assert shutil.which("ctags"), "Universal Ctags is needed: apt-get install universal-ctags"
    root = tmp_path / "tree"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text(
        "class Outer:\n    class Inner:\n        def method(self):\n"
        "            def closure():\n                pass\n\n\n"
        "def top():\n    pass\n\nCONSTANT = 3\n"
    )
    (root / "pkg" / "lib.go").write_text("package lib\n\ntype Server struct{}\n\nfunc (s *Server) Serve() {}\n")
    (root / "pkg" / "util.js").write_text("class Widget {\n  render() {}\n}\nfunction helper() {}\n")
    (root / "README.md").write_text("# Outer\n\n## top\n")  # headings are no definitions
    (root / "data.json").write_text('{"top": 1}\n')
    return root


def names(index: TreeIndex) -> set[str]:
    return {".".join(d.parts) for d in index.definitions or ()}


def test_definitions_with_their_scopes(tree):
    index = build_index(tree)
    assert {
        "Outer",
        "Outer.Inner",
        "Outer.Inner.method",
        "top",
        "CONSTANT",
        "Widget",
        "Widget.render",
        "helper",
        "lib.Server",
        "lib.Server.Serve",
    } <= names(index)
    assert not any(n.endswith("closure") for n in names(index))  # local to a function
    assert all(d.path.endswith((".py", ".go", ".js")) for d in index.definitions or ())  # no prose, no data
    assert index.definition("Inner.method") == Definition("pkg/mod.py", 3, ("Outer", "Inner", "method"))
    assert index.definition("Server.Serve") == Definition("pkg/lib.go", 5, ("lib", "Server", "Serve"))
    assert index.definition("top") == Definition("pkg/mod.py", 8, ("top",))
    assert index.definition("Other.method") is None
    assert index.files == ("README.md", "data.json", "pkg/lib.go", "pkg/mod.py", "pkg/util.js")


def test_split_name():
    assert split_name("a.b::c#d") == ("a", "b", "c", "d")
    assert split_name("") == ()


def test_a_hostile_tree_cannot_give_ctags_options(tree, tmp_path):
    # Universal Ctags reads ./.ctags.d/*.ctags and ./ctags.d/*.ctags from where it runs (the
    # tree) and ~/.ctags.d: options there could write the tags anywhere or invent
    # definitions. --options=NONE reads none of them.
    written = tmp_path / "written-by-ctags"
    evil = f"-o{written}\n--regex-Python=/^marker_([a-z]+)/Injected\\1/f/\n--kinds-Python=-c\n"
    for directory in (".ctags.d", "ctags.d"):
        (tree / directory).mkdir()
        (tree / directory / "evil.ctags").write_text(evil)
    (tree / "pkg" / "mod.py").write_text((tree / "pkg" / "mod.py").read_text() + "marker_abc = 1\n")
    home = tmp_path / "home"
    (home / ".ctags.d").mkdir(parents=True)
    (home / ".ctags.d" / "evil.ctags").write_text(evil)
    old_home = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        index = build_index(tree)
    finally:
        os.environ["HOME"] = old_home or ""
    assert not written.exists()
    assert "Outer" in names(index)  # classes were not switched off
    assert not any(n.startswith("Injected") for n in names(index))


def test_symlinks_and_git_are_not_indexed(tree, tmp_path):
    outside = tmp_path / "outside.py"
    outside.write_text("def leaked_secret_function():\n    pass\n")
    os.symlink(outside, tree / "pkg" / "link.py")
    os.symlink(tmp_path, tree / "up")
    (tree / ".git").mkdir()
    (tree / ".git" / "hook.py").write_text("def in_git():\n    pass\n")
    index = build_index(tree)
    assert "leaked_secret_function" not in names(index) and "in_git" not in names(index)
    assert index.files is not None and not any(
        p.startswith((".git", "up")) or p.endswith("link.py") for p in index.files
    )


def test_too_many_definitions_leave_symbols_unknown_not_partial(tree, monkeypatch):
    monkeypatch.setattr(tree_index, "MAX_DEFINITIONS", 3)
    index = build_index(tree)
    assert index.definitions is None and index.files is not None
    assert index.definition("top") is None


def test_too_many_files_leave_the_whole_index_unknown(tree, monkeypatch):
    monkeypatch.setattr(tree_index, "MAX_FILES", 2)
    index = build_index(tree)
    assert index == TreeIndex() and index.file_named("mod.py") is None


def test_large_files_are_not_parsed(tree, monkeypatch):
    monkeypatch.setattr(tree_index, "MAX_SOURCE_BYTES", 60)
    index = build_index(tree)
    assert "Widget" in names(index) and "Outer" not in names(index)  # util.js is small, mod.py is not
    assert index.file_named("mod.py") == "pkg/mod.py"  # still a file


def test_no_ctags_or_not_universal_ctags_leaves_symbols_unknown(tree, tmp_path, caplog):
    assert build_index(tree, ctags=str(tmp_path / "absent")).definitions is None
    fake = tmp_path / "ctags"
    fake.write_text("#!/bin/sh\necho 'Exuberant Ctags 5.8'\n")
    fake.chmod(0o755)
    index = build_index(tree, ctags=str(fake))
    assert index.definitions is None and index.files is not None
    assert "not Universal Ctags" in caplog.text


def test_the_stored_form_round_trips_and_rejects_junk(tree):
    index = build_index(tree)
    assert TreeIndex.loads(index.dumps()) == index
    assert TreeIndex.loads(TreeIndex().dumps()) == TreeIndex()
    assert TreeIndex.loads(b"not zlib") is None
    import json
    import zlib

    assert TreeIndex.loads(zlib.compress(json.dumps({"v": 999}).encode())) is None


def test_file_named_needs_one_file_at_a_component_boundary():
    index = TreeIndex(files=("a/x.py", "b/x.py", "c/y.py", "c/my.py"))
    assert index.file_named("x.py") is None  # two
    assert index.file_named("a/x.py") == "a/x.py"
    assert index.file_named("y.py") == "c/y.py"  # not also "c/my.py"
    assert index.file_named("c/../c/y.py") is None and index.file_named("/c/y.py") is None
