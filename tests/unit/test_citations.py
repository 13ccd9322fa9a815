"""Citations: references found in an answer, checked against a tree, linked at a commit;
and the web hosts' permalink shapes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobs.citations import MAX_CHECKS, Reference, Tree, link_citations
from jobs.slack.mrkdwn import deceptive, safe_markdown, to_mrkdwn
from jobs.web_host import BadTemplate, checkout_remote, parse_remote, web_host

SHA = "0123456789abcdef0123456789abcdef01234567"
GH = web_host("https://github.com/acme/demo.git")
BLOB = f"https://github.com/acme/demo/blob/{SHA}"


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("".join(f"line {i}\n" for i in range(1, 21)))  # 20 lines
    (root / "README.md").write_text("# demo\nno final newline")  # 2 lines
    (root / "Makefile").write_text("all:\n")
    (root / "jobs").mkdir()
    (root / "jobs" / "__init__.py").write_text("")
    (root / ".github" / "workflows").mkdir(parents=True)
    (root / ".github" / "workflows" / "ci.yml").write_text("on: push\n")
    return root


def link(text: str, root: Path) -> str:
    assert GH is not None
    return link_citations(text, root, SHA, GH)


# --------------------------------------------------------------------------- finding and linking


@pytest.mark.parametrize(
    "written, url",
    [
        ("src/app.py", f"{BLOB}/src/app.py"),
        ("src/app.py:12", f"{BLOB}/src/app.py#L12"),
        ("src/app.py:10-20", f"{BLOB}/src/app.py#L10-L20"),
        ("src/app.py#L10-L20", f"{BLOB}/src/app.py#L10-L20"),
        ("src/app.py#L3", f"{BLOB}/src/app.py#L3"),
        ("README.md:2", f"{BLOB}/README.md#L2"),
        ("/workspace/src/app.py:7", f"{BLOB}/src/app.py#L7"),
        ("./src/app.py:7", f"{BLOB}/src/app.py#L7"),
        (".github/workflows/ci.yml", f"{BLOB}/.github/workflows/ci.yml"),
    ],
)
def test_plain_references_to_existing_files_are_linked(tree, written, url):
    assert link(f"See {written} for it.", tree) == f"See [{written}]({url}) for it."


def test_backticked_references_keep_their_code_span(tree):
    assert link("In `src/app.py:3` and `Makefile`.", tree) == (
        f"In [`src/app.py:3`]({BLOB}/src/app.py#L3) and [`Makefile`]({BLOB}/Makefile)."
    )
    assert link("`` src/app.py ``", tree) == f"[`` src/app.py ``]({BLOB}/src/app.py)"


@pytest.mark.parametrize(
    "written",
    [
        "src/nope.py:3",  # made up
        "src/app.py:21",  # one past the last line
        "src/app.py:15-25",  # range running past the end
        "src/app.py:0",
        "src/app.py:9-3",  # backwards
        "README.md:3",  # the file has two lines (no final newline)
        "src",  # a directory
        "../tree/src/app.py",  # outside the root, however spelled
        ".git/config",
        "Makefile",  # plain words without "/" or "." are not looked up
    ],
)
def test_missing_files_and_lines_stay_plain(tree, written):
    (tree / ".git").mkdir()
    (tree / ".git" / "config").write_text("[core]\n")
    for text in (f"See {written}.", f"See `{written}`." if written != "Makefile" else "See Makefile."):
        assert link(text, tree) == text


def test_a_symlink_leading_out_of_the_tree_is_not_linked(tree, tmp_path):
    outside = tmp_path / "outside.py"
    outside.write_text("secret\n")
    os.symlink(outside, tree / "src" / "escape.py")
    os.symlink(tmp_path, tree / "up")
    os.symlink("app.py", tree / "src" / "alias.py")  # inside: fine
    assert link("src/escape.py:1 up/outside.py", tree) == "src/escape.py:1 up/outside.py"
    assert link("src/alias.py:1", tree) == f"[src/alias.py:1]({BLOB}/src/alias.py#L1)"


def test_code_blocks_links_and_urls_are_untouched(tree):
    text = "\n".join(
        [
            "```python",
            "# see src/app.py:3",
            "```",
            "~~~",
            "src/app.py",
            "~~~",
            "[the app](src/app.py) and [src/app.py:2](https://example.com/x) and ![img](src/app.py)",
            "<https://example.com/src/app.py> https://github.com/acme/demo/blob/main/src/app.py www.x.org/src/app.py",
            "[1]: src/app.py",
            "`python src/app.py` is a command, not a reference",
        ]
    )
    assert link(text, tree) == text


def test_surroundings_and_several_per_line(tree):
    out = link("**src/app.py:1**, (src/app.py:2); src/app.py:3. src/app.pyc src/app.py.bak src/app.py:2:5", tree)
    assert out == (
        f"**[src/app.py:1]({BLOB}/src/app.py#L1)**, ([src/app.py:2]({BLOB}/src/app.py#L2)); "
        f"[src/app.py:3]({BLOB}/src/app.py#L3). src/app.pyc src/app.py.bak "
        f"[src/app.py:2]({BLOB}/src/app.py#L2):5"
    )


def test_labels_with_emphasis_marks_are_code_spans_so_slack_keeps_them(tree):
    out = link("See jobs/__init__.py.", tree)
    assert out == f"See [`jobs/__init__.py`]({BLOB}/jobs/__init__.py)."
    assert "<https://github.com/acme/demo/blob/" in to_mrkdwn(out) and "|jobs/__init__.py>" in to_mrkdwn(out)


def test_lookups_are_bounded(tree):
    words = " ".join(f"x{i}.py" for i in range(MAX_CHECKS + 50)) + " src/app.py"
    assert link(words, tree).endswith("src/app.py")  # past the cap: nothing more is looked up


def test_tree_line_counts(tree):
    t = Tree(tree)
    assert t.line_count("src/app.py") == 20 and t.line_count("README.md") == 2
    assert t.line_count("jobs/__init__.py") == 0
    assert t.exists(Reference("jobs/__init__.py")) and not t.exists(Reference("jobs/__init__.py", 1))


# --------------------------------------------------------------------------- Slack rendering


def test_citation_links_become_slack_links_and_are_not_deceptive(tree):
    out = to_mrkdwn(link("See `src/app.py:3`, src/app.py:4-5, README.md and .github/workflows/ci.yml.", tree))
    assert f"<{BLOB}/src/app.py#L3|src/app.py:3>" in out
    assert f"<{BLOB}/src/app.py#L4-L5|src/app.py:4-5>" in out
    assert f"<{BLOB}/README.md|README.md>" in out
    assert f"<{BLOB}/.github/workflows/ci.yml|.github/workflows/ci.yml>" in out
    assert "(<" not in out  # no "real target beside the label": nothing deceptive
    streamed = safe_markdown(link("See src/app.py:3", tree))
    assert "([" not in streamed


@pytest.mark.parametrize("label", ["src/main.zig:12", "main.rs:3", "vendor/github.com/x/y.go", "docs/setup.md#L2"])
def test_path_labels_are_not_deceptive(label):
    assert not deceptive(label, "https://git.example/o/r/blob/x/" + label)


@pytest.mark.parametrize(
    "label",
    ["https://github.com/acme", "github.com/acme", "www.github.com", "github.com:443", "see github.com/acme/app.py"],
)
def test_url_looking_labels_elsewhere_stay_deceptive(label):
    assert deceptive(label, "https://evil.example/github.com/acme/app.py")
    assert "(<https://evil.example" in to_mrkdwn(f"[{label}](https://evil.example/github.com/acme/app.py)")


# --------------------------------------------------------------------------- web hosts


@pytest.mark.parametrize(
    "remote, base",
    [
        ("https://github.com/acme/demo.git", "https://github.com/acme/demo"),
        ("https://x-access-token:ghp_secret@github.com/acme/demo.git", "https://github.com/acme/demo"),
        ("git@github.com:acme/demo.git", "https://github.com/acme/demo"),
        ("ssh://git@github.com:22/acme/demo.git", "https://github.com/acme/demo"),
        ("https://gitlab.com/group/sub/demo.git", "https://gitlab.com/group/sub/demo"),
        ("git@gitlab.example.org:team/demo.git", "https://gitlab.example.org/team/demo"),
        ("https://bitbucket.org/acme/demo", "https://bitbucket.org/acme/demo"),
        ("https://gitea.example.org:3000/acme/demo.git", "https://gitea.example.org:3000/acme/demo"),
        ("git@codeberg.org:acme/demo.git", "https://codeberg.org/acme/demo"),
        ("https://github.example.com/acme/demo.git/", "https://github.example.com/acme/demo"),
    ],
)
def test_remotes_give_a_credential_free_base(remote, base):
    host = web_host(remote)
    assert host is not None and host.base == base
    assert "secret" not in repr(host)


@pytest.mark.parametrize(
    "remote",
    [
        None,
        "",
        "/srv/repos/demo",
        "file:///srv/repos/demo.git",
        "./demo",
        "https://git.internal.example/acme/demo.git",
        "git@host:../../etc",
    ],
)
def test_unknown_hosts_and_local_remotes_give_no_links(remote):
    assert web_host(remote) is None


@pytest.mark.parametrize(
    "remote, file_url, range_url, commit_url",
    [
        (
            "https://github.com/o/r",
            "https://github.com/o/r/blob/S/a%20b/c.py#L10",
            "https://github.com/o/r/blob/S/a%20b/c.py#L10-L20",
            "https://github.com/o/r/commit/S",
        ),
        (
            "https://gitlab.com/o/r",
            "https://gitlab.com/o/r/-/blob/S/a%20b/c.py#L10",
            "https://gitlab.com/o/r/-/blob/S/a%20b/c.py#L10-20",
            "https://gitlab.com/o/r/-/commit/S",
        ),
        (
            "https://bitbucket.org/o/r",
            "https://bitbucket.org/o/r/src/S/a%20b/c.py#lines-10",
            "https://bitbucket.org/o/r/src/S/a%20b/c.py#lines-10:20",
            "https://bitbucket.org/o/r/commits/S",
        ),
        (
            "https://gitea.example/o/r",
            "https://gitea.example/o/r/src/commit/S/a%20b/c.py#L10",
            "https://gitea.example/o/r/src/commit/S/a%20b/c.py#L10-L20",
            "https://gitea.example/o/r/commit/S",
        ),
    ],
)
def test_permalink_shapes(remote, file_url, range_url, commit_url):
    host = web_host(remote)
    assert host is not None
    assert host.file_url("S", "a b/c.py", 10) == file_url
    assert host.file_url("S", "a b/c.py", 10, 20) == range_url
    assert host.file_url("S", "a b/c.py") == file_url.split("#")[0]
    assert host.commit_url("S") == commit_url


def test_a_template_for_other_hosts():
    host = web_host(
        "git@git.internal.example:acme/demo.git",
        "https://git.internal.example/{repo}/tree/{commit}/{path}#L{start}-L{end}",
    )
    assert host is not None
    assert host.file_url("S", "src/app.py", 3, 5) == "https://git.internal.example/acme/demo/tree/S/src/app.py#L3-L5"
    assert host.file_url("S", "src/app.py", 3) == "https://git.internal.example/acme/demo/tree/S/src/app.py#L3-L3"
    assert host.file_url("S", "src/app.py") == "https://git.internal.example/acme/demo/tree/S/src/app.py"
    assert host.commit_url("S") == "https://git.internal.example/acme/demo/tree/S/"
    assert web_host(None, "https://{host}/x/{commit}/{path}") is not None  # no remote: {host}, {repo} empty
    with pytest.raises(BadTemplate, match=r"unknown placeholder.*sha"):
        web_host(None, "https://x/{sha}/{path}")
    with pytest.raises(BadTemplate, match="https://"):
        web_host(None, "javascript:alert(1)//{path}")


def test_parse_remote_keeps_no_credentials():
    remote = parse_remote("https://user:pa55@GitHub.com:443/Acme/Demo.git")
    assert remote is not None and (remote.host, remote.path) == ("github.com", "Acme/Demo")


def test_checkout_remote_reads_origin(tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert checkout_remote(tmp_path) is None
    subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "origin", "git@github.com:acme/demo.git"], check=True)
    assert checkout_remote(tmp_path) == "git@github.com:acme/demo.git"
    assert checkout_remote(tmp_path / "absent") is None


def test_the_footer_links_the_short_sha_only_with_a_commit_url():
    from jobs.final import Final
    from jobs.slack.blocks import footer

    linked = Final(
        kind="answer",
        text="x",
        repo="demo<&>",
        commit=SHA,
        agent="gemini",
        commit_url=f"https://github.com/acme/demo/commit/{SHA}",
    )
    [context] = footer(linked)
    assert context["elements"][0]["text"] == (
        f"demo&lt;&amp;&gt; · <https://github.com/acme/demo/commit/{SHA}|{SHA[:7]}> · gemini"
    )
    assert linked.footer() == f"demo<&> · {SHA[:7]} · gemini"  # plain text elsewhere
    [plain] = footer(linked.model_copy(update={"commit_url": None}))
    assert plain["elements"][0]["text"] == f"demo&lt;&amp;&gt; · {SHA[:7]} · gemini"


def test_cite_is_the_text_unchanged_without_a_commit_or_a_host(tree):
    from jobs.citations import cite

    text = "See src/app.py:3."
    assert cite(text, root=tree, commit=None, remote="https://github.com/acme/demo").text == text
    assert cite(text, root=tree, commit=SHA, remote=None).text == text
    assert cite(text, root=tree, commit=SHA, remote="/srv/repos/demo").commit_url is None
    assert cite(text, root=tree, commit=SHA, remote=None, web_url="https://x/{nope}").text == text  # bad template
    done = cite(text, root=tree, commit=SHA, remote="git@github.com:acme/demo.git")
    assert done.text == f"See [src/app.py:3]({BLOB}/src/app.py#L3)." and done.commit_url.endswith(f"/commit/{SHA}")
    templated = cite(text, root=tree, commit=SHA, remote=None, web_url="https://code.example/r/{commit}/{path}#{start}")
    assert templated.text == f"See [src/app.py:3](https://code.example/r/{SHA}/src/app.py#3)."
