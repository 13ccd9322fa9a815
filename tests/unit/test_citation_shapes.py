"""Citations as real answers write them: paths with their lines in words, lines that refer
to the file named last, bare file names, symbols (through the tree's ctags index); each
linked when real, plain when not; code blocks untouched; huge answers bounded in time."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from jobs.citations import MAX_CHECKS, MAX_LINE, cite, link_citations
from jobs.final import Final
from jobs.slack.mrkdwn import to_mrkdwn
from jobs.tree_index import Definition, TreeIndex, build_index, lazy
from jobs.web_host import web_host

SHA = "0123456789abcdef0123456789abcdef01234567"
GH = web_host("https://github.com/acme/demo.git")
BLOB = f"https://github.com/acme/demo/blob/{SHA}"
PROVIDER = "src/pkg/json/provider.py"

FILES = {
    PROVIDER: '''\
"""JSON providers."""


class JSONProvider:
    def dumps(self, obj):
        raise NotImplementedError


class DefaultJSONProvider(JSONProvider):
    ensure_ascii = True
    sort_keys = True

    def dumps(self, obj):
        return str(obj)

    def loads(self, s):
        return s
''',  # 17 lines: DefaultJSONProvider at 9, its dumps at 13-14
    "src/pkg/blueprints.py": "from .sansio.blueprints import Blueprint as SansioBlueprint\n\n\n"
    "class Blueprint(SansioBlueprint):\n    pass\n",
    "src/pkg/sansio/blueprints.py": "class Blueprint:\n    def _check_setup_finished(self, name):\n"
    "        raise AssertionError(name)\n",
    "src/pkg/app.py": "class Flask:\n    def _check_setup_finished(self, name):\n        pass\n\n\n"
    "def create_app():\n    return Flask()\n",
    "src/pkg/unique_module.py": "VALUE = 1\n",
    "tests/test_app.py": "def test_config():\n    class Flask:  # a throw-away local class\n        pass\n",
    "Makefile": "all:\n",
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert shutil.which("ctags"), "Universal Ctags is needed: apt-get install universal-ctags"
    root = tmp_path_factory.mktemp("tree")
    for path, text in FILES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


@pytest.fixture(scope="module")
def index(tree: Path) -> TreeIndex:
    built = build_index(tree)
    assert built.files is not None and built.definitions is not None
    return built


def link(text: str, tree: Path, index: TreeIndex | None) -> str:
    assert GH is not None
    return link_citations(text, tree, SHA, GH, (lambda: index) if index is not None else None)


# --------------------------------------------------------------------------- lines in words


@pytest.mark.parametrize(
    "written, linked",
    [
        (f"in `{PROVIDER}` (lines 9-14) it", f"in [`{PROVIDER}`]({BLOB}/{PROVIDER}#L9-L14) (lines 9-14) it"),
        (f"in {PROVIDER} (line 10)", f"in [{PROVIDER}]({BLOB}/{PROVIDER}#L10) (line 10)"),
        (f"{PROVIDER}, line 10", f"[{PROVIDER}]({BLOB}/{PROVIDER}#L10), line 10"),
        (f"{PROVIDER} at lines 10–11", f"[{PROVIDER}]({BLOB}/{PROVIDER}#L10-L11) at lines 10–11"),
        (f"`{PROVIDER}` lines 10 to 11", f"[`{PROVIDER}`]({BLOB}/{PROVIDER}#L10-L11) lines 10 to 11"),
        (f"lines 13-14 of `{PROVIDER}`", f"lines 13-14 of [`{PROVIDER}`]({BLOB}/{PROVIDER}#L13-L14)"),
        (f"line 1 in {PROVIDER}.", f"line 1 in [{PROVIDER}]({BLOB}/{PROVIDER}#L1)."),
    ],
)
def test_a_path_takes_the_lines_written_next_to_it(tree, index, written, linked):
    assert link(written, tree, index) == linked
    assert link(written, tree, None) == linked  # a full path needs no index


def test_lines_on_their_own_refer_to_the_file_named_last(tree, index):
    text = (
        f"`DefaultJSONProvider` lives in `{PROVIDER}`. The `dumps` method (lines 13-14) returns a string; "
        "see also line 10."
    )
    assert link(text, tree, index) == (
        f"[`DefaultJSONProvider`]({BLOB}/{PROVIDER}#L9) lives in [`{PROVIDER}`]({BLOB}/{PROVIDER}). "
        f"The `dumps` method ([lines 13-14]({BLOB}/{PROVIDER}#L13-L14)) returns a string; "
        f"see also [line 10]({BLOB}/{PROVIDER}#L10)."
    )


def test_a_symbol_names_the_file_its_lines_are_in(tree, index):
    out = link("`Blueprint._check_setup_finished` (lines 2-3) raises.", tree, index)
    assert out == (
        f"[`Blueprint._check_setup_finished`]({BLOB}/src/pkg/sansio/blueprints.py#L2) "
        f"([lines 2-3]({BLOB}/src/pkg/sansio/blueprints.py#L2-L3)) raises."
    )


@pytest.mark.parametrize(
    "written",
    [
        "`src/pkg/nope.py` (lines 1-2)",  # made-up file: its lines are not the last file's
        "src/pkg/nope.py, line 1",
        f"{PROVIDER} (lines 17-18)",  # past the end
        f"`{PROVIDER}` line 0",
        "lines 1-2 of `src/pkg/nope.py`",
        "`nope.py` (line 1)",
    ],
)
def test_made_up_files_and_lines_in_words_stay_plain(tree, index, written):
    text = f"See `{PROVIDER}`. Then {written}."
    assert link(text, tree, index) == f"See [`{PROVIDER}`]({BLOB}/{PROVIDER}). Then {written}."


def test_lines_with_no_file_named_before_stay_plain(tree, index):
    assert link("It fails at line 3 and lines 1-2.", tree, index) == "It fails at line 3 and lines 1-2."
    assert link(f"`{PROVIDER}`: lines 99-120.", tree, index) == f"[`{PROVIDER}`]({BLOB}/{PROVIDER}): lines 99-120."


# --------------------------------------------------------------------------- bare names


@pytest.mark.parametrize(
    "written, path",
    [
        ("`unique_module.py`", "src/pkg/unique_module.py"),
        ("sansio/blueprints.py", "src/pkg/sansio/blueprints.py"),
        ("`json/provider.py`", PROVIDER),
        ("`provider.py`", PROVIDER),
        ("`pkg/app.py`", "src/pkg/app.py"),
    ],
)
def test_a_bare_name_unique_in_the_tree_is_linked(tree, index, written, path):
    assert link(f"See {written}.", tree, index) == f"See [{written}]({BLOB}/{path})."
    # In plain text, a name with "_" becomes a code span: Slack would read the marks as emphasis.
    assert link("See unique_module.py.", tree, index) == f"See [`unique_module.py`]({BLOB}/src/pkg/unique_module.py)."


def test_a_bare_name_with_lines_in_words(tree, index):
    assert (
        link("`provider.py` (lines 13-14)", tree, index) == f"[`provider.py`]({BLOB}/{PROVIDER}#L13-L14) (lines 13-14)"
    )
    assert link("provider.py:10", tree, index) == f"[provider.py:10]({BLOB}/{PROVIDER}#L10)"


@pytest.mark.parametrize(
    "written",
    [
        "`blueprints.py`",  # two files of that name
        "blueprints.py",
        "`nope.py`",
        "`kg/app.py`",  # not at a path component's boundary
        "`../pkg/app.py`",
        "`config`",  # an extensionless word is a file only at the root
    ],
)
def test_ambiguous_or_missing_bare_names_stay_plain(tree, index, written):
    assert link(f"See {written}.", tree, index) == f"See {written}."


# --------------------------------------------------------------------------- symbols


@pytest.mark.parametrize(
    "written, target",
    [
        ("`DefaultJSONProvider`", f"{PROVIDER}#L9"),
        ("`JSONProvider`", f"{PROVIDER}#L4"),
        ("`Blueprint._check_setup_finished`", "src/pkg/sansio/blueprints.py#L2"),
        ("`Flask`", "src/pkg/app.py#L1"),  # the test's local class does not make it ambiguous
        ("`create_app()`", "src/pkg/app.py#L6"),
        ("`ensure_ascii`", f"{PROVIDER}#L10"),
    ],
)
def test_a_symbol_naming_one_definition_is_linked(tree, index, written, target):
    assert link(f"Uses {written} here.", tree, index) == f"Uses [{written}]({BLOB}/{target}) here."


def test_a_symbol_lends_its_file_only_to_the_lines_right_after_it(tree, index):
    # "`secret_key` is unset (line 3)": the lines are the file being read, not the symbol's.
    out = link(f"In `{PROVIDER}`, `Blueprint._check_setup_finished` is unrelated; see line 10.", tree, index)
    assert out.endswith(f"see [line 10]({BLOB}/{PROVIDER}#L10).")


@pytest.mark.parametrize(
    "written, target",
    [
        ("`pkg.json.provider.DefaultJSONProvider`", f"{PROVIDER}#L9"),
        ("`src.pkg.app.create_app`", "src/pkg/app.py#L6"),
        ("`pkg.sansio.blueprints.Blueprint`", "src/pkg/sansio/blueprints.py#L1"),
    ],
)
def test_a_symbol_qualified_by_its_module_path(tree, index, written, target):
    head, _, tail = written.strip("`").rpartition(".")  # dotted names read like hosts: the last part links
    assert link(f"Uses {written}.", tree, index) == f"Uses `{head}.`[`{tail}`]({BLOB}/{target})."


def test_a_single_module_name_is_not_enough(tree, index):
    # "json.dumps" is as often the standard library's: one module name does not qualify.
    (tree / "src" / "pkg" / "json" / "__init__.py").write_text("def dumps(obj):\n    return obj\n")
    try:
        fresh = build_index(tree)
        assert link("`json.dumps`", tree, fresh) == "`json.dumps`"
        assert link("`pkg.json.dumps`", tree, fresh) == f"`pkg.json.`[`dumps`]({BLOB}/src/pkg/json/__init__.py#L1)"
    finally:
        (tree / "src" / "pkg" / "json" / "__init__.py").unlink()


def test_a_list_of_lines_is_no_range(tree, index):
    text = f"See `{PROVIDER}`; lines 10 and 13 of `src/pkg/app.py`, lines 2, 3 there."
    assert link(text, tree, index) == (
        f"See [`{PROVIDER}`]({BLOB}/{PROVIDER}); lines 10 and 13 of "
        f"[`src/pkg/app.py`]({BLOB}/src/pkg/app.py), lines 2, 3 there."
    )


def test_a_qualified_symbol_that_reads_like_a_host_links_its_last_part(tree, index):
    out = link("`DefaultJSONProvider.dumps` and `DefaultJSONProvider.loads()`", tree, index)
    assert out == (
        f"`DefaultJSONProvider.`[`dumps`]({BLOB}/{PROVIDER}#L13) and "
        f"`DefaultJSONProvider.`[`loads()`]({BLOB}/{PROVIDER}#L16)"
    )
    shown = to_mrkdwn(out)
    assert f"<{BLOB}/{PROVIDER}#L13|dumps>" in shown and "(<" not in shown  # not taken for a deceptive link


@pytest.mark.parametrize(
    "written",
    [
        "`Blueprint`",  # two classes
        "`_check_setup_finished`",  # two methods
        "`dumps`",
        "`json.dumps`",  # no scope "json" holds a dumps
        "`NoSuchThing`",
        "`SansioBlueprint`",  # an import alias is no definition
        "`python -m pkg`",
        "DefaultJSONProvider",  # not in backticks
    ],
)
def test_ambiguous_or_unknown_symbols_stay_plain(tree, index, written):
    assert link(f"Uses {written} here.", tree, index) == f"Uses {written} here."


def test_without_an_index_symbols_and_bare_names_stay_plain(tree):
    text = "`DefaultJSONProvider` in `provider.py`"
    assert link(text, tree, None) == text
    assert link(text, tree, TreeIndex()) == text  # an index that is unknown (too large, no ctags)
    no_ctags = build_index(tree, ctags="/nonexistent/ctags")
    assert no_ctags.definitions is None and no_ctags.files is not None
    assert link(text, tree, no_ctags) == f"`DefaultJSONProvider` in [`provider.py`]({BLOB}/{PROVIDER})"


def test_identifiers_do_not_use_up_the_file_checks(tree, index):
    names = " ".join(f"`name{i}`" for i in range(MAX_CHECKS + 100))
    assert link(f"{names} then `{PROVIDER}:3`", tree, index).endswith(f"[`{PROVIDER}:3`]({BLOB}/{PROVIDER}#L3)")


def test_a_failing_index_leaves_names_plain(tree):
    def broken() -> TreeIndex:
        raise RuntimeError("boom")

    assert GH is not None
    assert link_citations("`DefaultJSONProvider` `provider.py`", tree, SHA, GH, broken) == (
        "`DefaultJSONProvider` `provider.py`"
    )


def test_the_index_is_built_only_when_a_name_needs_it(tree, index):
    calls = []

    def counting() -> TreeIndex:
        calls.append(1)
        return index

    assert GH is not None
    link_citations(f"See {PROVIDER}:3 and `Makefile`.", tree, SHA, GH, lazy(counting))
    assert calls == []  # full paths are checked on the tree itself
    link_citations("`DefaultJSONProvider`, `provider.py` and `Flask`", tree, SHA, GH, lazy(counting))
    assert calls == [1]  # once per answer


# --------------------------------------------------------------------------- never a false link


def test_code_blocks_and_links_are_untouched(tree, index):
    text = "\n".join(
        [
            "```python",
            f"DefaultJSONProvider  # {PROVIDER} (lines 9-14), `provider.py`, `Flask`",
            "```",
            "~~~",
            "`DefaultJSONProvider` line 3",
            "~~~",
            "[`Flask`](https://example.com/flask) <https://example.com/provider.py> https://x.example/provider.py",
        ]
    )
    assert link(text, tree, index) == text


def test_every_link_targets_a_real_file_and_real_lines(tree, index):
    answer = (
        f"`DefaultJSONProvider` in `{PROVIDER}` (lines 9-14); `provider.py` line 13; `blueprints.py`; "
        "`Blueprint._check_setup_finished`; `Ghost` in `src/ghost.py` (lines 1-9); lines 200-300; "
        "`unique_module.py`:1; made/up.py:3"
    )
    out = link(answer, tree, index)
    import re

    for path, fragment in re.findall(rf"\]\({re.escape(BLOB)}/([^)#]+)(#L[\d-]+L?\d*)?\)", out):
        lines = (tree / path).read_text().count("\n")
        assert (tree / path).is_file()
        numbers = [int(n) for n in re.findall(r"\d+", fragment)]
        assert all(1 <= n <= lines for n in numbers), (path, fragment)


# --------------------------------------------------------------------------- bounded


@pytest.mark.parametrize(
    "unit",
    [
        "`DefaultJSONProvider` (lines 9-14) `provider.py` line 3 ",  # everything resolvable, repeated
        "`",
        "``x`",
        "a.",
        "a",
        "a/",
        "[a",
        "![a](",
        "<a:",
        "lines 1 to ",
        "x.py:1-",
        "`Ghost` ",
    ],
)
def test_a_one_megabyte_answer_is_bounded_in_time(tree, index, unit):
    """Linear, not worse: 1 MiB of an adversarial shape against 32 KiB of it, in the same
    run (best of three each, in this process's CPU time: other processes on a busy machine
    do not count). A linear scan of the capped part costs at most 8x; the quadratic pattern
    this guards against cost about 14 s on 1 MiB against about 10 ms, over 1000x: the bound
    is 64x, far from both."""
    line = (unit * (MAX_LINE // len(unit) + 1))[: MAX_LINE - 10]
    text = ("\n".join([line] * (2**20 // len(line) + 1)))[: 2**20]
    assert GH is not None

    def best_of_three(answer: str) -> float:
        times = []
        for _ in range(3):
            started = time.process_time()
            cite(answer, root=tree, commit=SHA, remote="https://github.com/acme/demo.git", index=lambda: index)
            times.append(time.process_time() - started)
        return min(times)

    small, large = best_of_three(text[: 32 << 10]), best_of_three(text)
    assert large < max(small, 0.005) * 64, f"1 MiB took {large:.3f} s, 32 KiB {small:.4f} s"
    cited = cite(text, root=tree, commit=SHA, remote="https://github.com/acme/demo.git", index=lambda: index)
    assert len(cited.text) >= len(text)
    one_line = cite(
        unit * (2**20 // len(unit)),
        root=tree,
        commit=SHA,
        remote="https://github.com/acme/demo.git",
        index=lambda: index,
    )
    assert one_line.verified == 0  # a single line past MAX_LINE is left as it is


# --------------------------------------------------------------------------- the footer's count


def test_cite_counts_the_references_it_verified(tree, index):
    cited = cite(
        f"`DefaultJSONProvider` in `{PROVIDER}` (lines 9-14); `blueprints.py`; `src/nope.py`.",
        root=tree,
        commit=SHA,
        remote="git@github.com:acme/demo.git",
        index=lambda: index,
    )
    assert cited.verified == 2 and cited.text.count("](https://") == 2


def test_cite_counts_the_references_that_claim_a_place_the_tree_lacks(tree, index):
    """Found = linked + what names a place that is not there (a made-up path, lines past
    the end, lines of a made-up file); a word that names nothing, or an ambiguous name,
    claims no place and is not counted (askbox eval's "unverifiable" is the difference)."""
    answer = (
        f"`DefaultJSONProvider` in `{PROVIDER}` (lines 9-14); the `dumps` method (lines 13-14).\n"
        f"Not real: `src/pkg/ghost.py`, src/nope.py:3, `{PROVIDER}:999`, `unique_module.py` (line 40), "
        "lines 3-4 of `nope.py`.\n"
        "Not references: `blueprints.py` (two of them), `Blueprint`, `dumps()`, e.g. this, version 3.11.\n"
        "```\nsrc/pkg/gone.py:1\n```"
    )
    cited = cite(answer, root=tree, commit=SHA, remote="https://github.com/acme/demo.git", index=lambda: index)
    assert cited.verified == 3 and cited.text.count("](https://") == 3
    assert cited.found == 3 + 5, cited.text
    assert (
        cite(
            "No references at all.",
            root=tree,
            commit=SHA,
            remote="https://github.com/acme/demo.git",
            index=lambda: index,
        ).found
        == 0
    )


def test_the_footer_says_how_many_references_were_verified():
    final = Final(kind="answer", text="x", repo="demo", commit=SHA, agent="gemini", verified=3)
    assert final.footer().endswith("· 3 references verified")
    assert final.model_copy(update={"verified": 1}).footer().endswith("· 1 reference verified")
    assert "verified" not in final.model_copy(update={"verified": 0}).footer()
    assert "verified" not in final.model_copy(update={"verified": None}).footer()


def test_a_name_with_many_definitions_named_many_times_is_bounded(tree):
    many = TreeIndex(
        files=tuple(f"m{i}.py" for i in range(50_000)),
        definitions=tuple(Definition(f"m{i}.py", 1, (f"C{i}", "__init__")) for i in range(50_000)),
    )
    text = ("`__init__` `C7.__init__` `m7.py`\n" * 40_000)[: 2**20]
    started = time.monotonic()
    cite(text, root=tree, commit=SHA, remote="https://github.com/acme/demo.git", index=lambda: many)
    assert time.monotonic() - started < 3.0
