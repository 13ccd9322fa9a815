"""Markdown → Slack mrkdwn, and splitting at Slack's limits without breaking code blocks."""

from __future__ import annotations

import random
import re
import time

import pytest

from jobs.slack.mrkdwn import (
    FILE_THRESHOLD,
    PART_LIMIT,
    SECTION_LIMIT,
    escape,
    fence_closer,
    open_fence,
    safe_markdown,
    settled,
    split_message,
    summarize_for_file,
    to_mrkdwn,
)

# --------------------------------------------------------------------------- to_mrkdwn: inline


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold**", "*bold*"),
        ("__bold__", "*bold*"),
        ("*italic*", "_italic_"),
        ("_italic_", "_italic_"),
        ("***both***", "*_both_*"),
        ("~~gone~~", "~gone~"),
        ("**bold with *italic* inside**", "*bold with _italic_ inside*"),
        ("a **b** c *d* e", "a *b* c _d_ e"),
        ("snake_case_name and 2*3*4", "snake_case_name and 2*3*4"),
        ("a * b * c", "a * b * c"),
        ("[Slack](https://slack.com)", "<https://slack.com|Slack>"),
        ("[https://x.io](https://x.io)", "<https://x.io>"),
        ("![diagram](https://x.io/d.png)", "<https://x.io/d.png|diagram>"),
        ('[t](https://x.io/a "title")', "<https://x.io/a|t>"),
        ("[wiki](https://en.wikipedia.org/wiki/Foo_(bar))", "<https://en.wikipedia.org/wiki/Foo_(bar)|wiki>"),
        ("[q](https://x.io/?a=1&b=2)", "<https://x.io/?a=1&amp;b=2|q>"),
        ("[**bold** label](https://x.io)", "<https://x.io|bold label>"),
        ("[`code` label](https://x.io)", "<https://x.io|code label>"),
        ("[app.py](src/app.py)", "app.py (`src/app.py`)"),
        ("[src/app.py](src/app.py)", "src/app.py"),
        ("<https://auto.link/x?a=1>", "<https://auto.link/x?a=1>"),
        ("`inline **code**`", "`inline **code**`"),
        ("``a `tick` b``", "`a `tick` b`"),
        ("`<div>` & x", "`&lt;div&gt;` &amp; x"),
        ("a < b && c > d", "a &lt; b &amp;&amp; c &gt; d"),
        ("<@U123> <!channel> <!here>", "&lt;@U123&gt; &lt;!channel&gt; &lt;!here&gt;"),
        (r"not \*italic\* here", "not *italic* here"),
        ("tab\tstays", "tab\tstays"),
    ],
)
def test_inline(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


# --------------------------------------------------------------------------- to_mrkdwn: blocks


def test_headings_become_bold_lines() -> None:
    assert to_mrkdwn("# Title") == "*Title*"
    assert to_mrkdwn("### Sub **part** ###") == "*Sub part*"
    assert to_mrkdwn("Setext\n======\n\nbody") == "*Setext*\n\nbody"
    assert to_mrkdwn("Two\n---") == "*Two*"
    assert to_mrkdwn("#hashtag") == "#hashtag"  # no space: not a heading


def test_lists_keep_their_shape() -> None:
    md = "- one\n* two\n+ three\n  - nested *it*\n    - deeper\n1. first\n2) second\n- [ ] todo\n- [x] done"
    assert to_mrkdwn(md).split("\n") == [
        "• one",
        "• two",
        "• three",
        "    ◦ nested _it_",
        "        ▪ deeper",
        "1. first",
        "2. second",
        "• ☐ todo",
        "• ☑ done",
    ]


def test_quote_rule_and_breaks() -> None:
    assert to_mrkdwn("> quoted **b**\n>> nested") == "> quoted *b*\n> nested"
    assert to_mrkdwn("above\n\n---\n\nbelow") == "above\n\n──────────\n\nbelow"
    assert to_mrkdwn("hard\\\nbreak  \nend") == "hard\nbreak\nend"


def test_fenced_code_is_kept_verbatim_without_language() -> None:
    md = "Look:\n\n```python\ndef f(a, b):\n    return a**2 < b  # **not bold** [x](y)\n```\n\nafter *it*"
    assert to_mrkdwn(md) == (
        "Look:\n\n```\ndef f(a, b):\n    return a**2 &lt; b  # **not bold** [x](y)\n```\n\nafter _it_"
    )


def test_tilde_fences_indented_fences_and_unclosed_fences() -> None:
    assert to_mrkdwn("~~~\n*x*\n~~~") == "```\n*x*\n```"
    assert to_mrkdwn("- step:\n  ```sh\n  make *all*\n  ```\n- next") == "• step:\n```\nmake *all*\n```\n• next"
    assert to_mrkdwn("```\nnever closed **x**") == "```\nnever closed **x**\n```"
    # A longer fence contains a shorter one; Slack would end at the inner ```, so it is broken up.
    out = to_mrkdwn("````md\n```py\nx\n```\n````")
    assert out.startswith("```\n") and out.endswith("\n```") and out.count("```") == 2


def test_tables_become_aligned_code() -> None:
    md = "| name | size |\n|:-----|-----:|\n| **a** | 1 |\n| bb | `22` |\n\nafter"
    assert to_mrkdwn(md) == "```\nname | size\n-----+-----\na    | 1\nbb   | 22\n```\n\nafter"


def test_realistic_answer() -> None:
    md = (
        "## Where retries live\n\n"
        "Retries are configured in `jobs/queue.py` (see [the RQ docs](https://python-rq.org/docs/)):\n\n"
        "1. **Infrastructure** faults are retried *twice*.\n"
        "2. Anything else is ~~retried~~ reported once.\n\n"
        "```python\nRetry(max=2, interval=[5, 15])  # <- here\n```\n"
    )
    assert to_mrkdwn(md) == (
        "*Where retries live*\n\n"
        "Retries are configured in `jobs/queue.py` (see <https://python-rq.org/docs/|the RQ docs>):\n\n"
        "1. *Infrastructure* faults are retried _twice_.\n"
        "2. Anything else is ~retried~ reported once.\n\n"
        "```\nRetry(max=2, interval=[5, 15])  # &lt;- here\n```\n"
    )


@pytest.mark.parametrize("line", ["*a ", "**a ", "***a ", "__a ", "~~a ", "``a `", "[x](y "])
def test_stray_markers_stay_linear(line: str) -> None:
    text = line * 20_000
    started = time.perf_counter()
    to_mrkdwn(text)
    assert time.perf_counter() - started < 1.0


def test_escape_only_control_characters() -> None:
    assert escape('Tom & Jerry\'s <b> "x"') == 'Tom &amp; Jerry\'s &lt;b&gt; "x"'


# --------------------------------------------------------------------------- split_message


def _fences_balanced(part: str) -> bool:
    return part.count("```") % 2 == 0


def _rejoin(parts: list[str]) -> str:
    # The split adds "\n```" at the end of a part and "```\n" at the start of the next
    # when it cuts a code block: joined with "\n" that is exactly "\n```\n```\n".
    return "\n".join(parts).replace("\n```\n```\n", "\n")


def test_short_text_is_one_part() -> None:
    assert split_message("hello", 100) == ["hello"]
    assert split_message("x" * 100, 100) == ["x" * 100]


def test_prefers_paragraph_boundaries() -> None:
    paragraphs = [f"paragraph {i} " + "word " * 30 for i in range(10)]
    text = "\n\n".join(paragraphs)
    parts = split_message(text, 500)
    assert all(len(p) <= 500 for p in parts)
    assert _rejoin(parts) == text
    # Every part but the last ends at a paragraph end: no paragraph is cut in two.
    whole = {p.strip() for p in paragraphs}
    for part in parts:
        for line in part.strip().split("\n"):
            assert line == "" or line.strip() in whole


def test_moves_a_code_block_whole_rather_than_cutting_it() -> None:
    prose = "intro " * 50
    code = "```\n" + "\n".join(f"line {i}" for i in range(30)) + "\n```"
    text = prose + "\n\n" + code + "\n\nafter"
    parts = split_message(text, 400)
    assert parts[0].strip() == prose.strip()
    assert parts[1].startswith("```\nline 0")  # the block begins the next part, whole
    assert all(_fences_balanced(p) for p in parts)
    assert _rejoin(parts) == text


def test_cuts_a_long_code_block_and_reopens_it() -> None:
    code = "```\n" + "\n".join(f"value_{i} = {i} * 2" for i in range(400)) + "\n```"
    parts = split_message(code, 1000)
    assert len(parts) > 5
    for part in parts:
        assert len(part) <= 1000
        assert part.startswith("```\n") and part.endswith("\n```")
        assert _fences_balanced(part)
        assert "```\n```" not in part  # never an empty block at a cut
    assert _rejoin(parts) == code


def test_a_single_line_longer_than_the_limit_is_cut() -> None:
    line = "word " * 1000 + "end"
    parts = split_message(line, 400)
    assert all(len(p) <= 400 for p in parts)
    assert "".join(parts) == line
    assert all(p.endswith(" ") for p in parts[:-1])  # cut after a space


def test_long_line_inside_code_keeps_fences_and_entities() -> None:
    text = "```\n" + "&lt;" * 500 + "\n```"
    parts = split_message(text, 300)
    assert all(len(p) <= 300 and _fences_balanced(p) for p in parts)
    for part in parts:
        body = part.removeprefix("```\n").removesuffix("\n```")
        assert re.fullmatch(r"(&lt;)*", body.replace("\n", "")), "an entity was cut in two"


def test_never_cuts_a_link_token() -> None:
    line = " ".join(f"<https://example.com/page/{i}|page {i}>" for i in range(80))
    parts = split_message(line, 500)
    for part in parts:
        assert part.count("<") == part.count(">")


def test_limit_too_small_is_refused() -> None:
    with pytest.raises(ValueError):
        split_message("x" * 100, 10)


def _long_answer(seed: int = 7, size: int = 60_000) -> str:
    """A 60,000-character Markdown answer: prose, lists and several long code blocks."""
    rng = random.Random(seed)
    words = ["the", "worker", "retries", "jobs", "after", "infrastructure", "faults", "posts", "one", "answer"]
    out: list[str] = []
    n = 0
    while sum(len(s) + 2 for s in out) < size - 12:
        n += 1
        kind = n % 5
        if kind == 0:
            lang = rng.choice(["python", "sh", ""])
            lines = [
                f"    result_{n}_{i} = compute({i}, '{rng.choice(words)}')  # <{i}> & more"
                for i in range(rng.randint(40, 160))
            ]
            out.append(f"```{lang}\n" + "\n".join(lines) + "\n```")
        elif kind == 1:
            out.append(f"## Section {n}")
        elif kind == 2:
            out.append("\n".join(f"- **item {i}**: " + " ".join(rng.choices(words, k=12)) for i in range(5)))
        else:
            out.append(" ".join(rng.choices(words, k=rng.randint(30, 120))) + ".")
    return "\n\n".join(out) + "\n\nThe end."


@pytest.mark.parametrize("limit", [PART_LIMIT, SECTION_LIMIT, 1500])
def test_sixty_thousand_characters(limit: int) -> None:
    answer = _long_answer()
    assert len(answer) > 60_000 and answer.count("```") >= 16
    mrkdwn = to_mrkdwn(answer)
    parts = split_message(mrkdwn, limit)
    assert len(parts) >= len(mrkdwn) // limit
    for part in parts:
        assert 0 < len(part) <= limit
        assert _fences_balanced(part), part[:200]
    assert _rejoin(parts) == mrkdwn
    # Parts are well filled: the split is not needlessly fragmented.
    assert len(parts) <= 2 * len(mrkdwn) // limit + 1


def test_sixty_thousand_characters_of_one_code_block() -> None:
    code = "```\n" + "\n".join(f"x = {i}  # {'=' * (i % 70)}" for i in range(1500)) + "\n```"
    assert len(code) > 50_000
    parts = split_message(code, PART_LIMIT)
    assert all(len(p) <= PART_LIMIT and _fences_balanced(p) for p in parts)
    assert _rejoin(parts) == code


# --------------------------------------------------------------------------- summaries and fences


def test_summary_takes_the_opening_paragraphs() -> None:
    answer = _long_answer()
    summary = summarize_for_file(answer)
    assert 0 < len(summary) <= 520
    assert "```" not in summary
    assert answer.startswith(summary.split("\n")[0])


def test_summary_cuts_one_long_paragraph_at_a_sentence() -> None:
    text = ("This sentence explains the design. " * 40).strip()
    summary = summarize_for_file(text)
    assert summary.endswith(".") and len(summary) <= 500


def test_summary_skips_a_leading_code_block() -> None:
    text = "```\ncode first\n```\n\nThen the explanation.\n\nMore."
    assert summarize_for_file(text).startswith("Then the explanation.")


def test_summary_keeps_heading_with_its_paragraph() -> None:
    assert summarize_for_file("# Answer\n\nIt is in jobs/queue.py.") == "# Answer\n\nIt is in jobs/queue.py."


def test_summary_never_leaves_an_open_code_span() -> None:
    text = "word " * 95 + "`" + "code " * 40 + "`"
    assert summarize_for_file(text).count("`") % 2 == 0


def test_file_threshold_is_above_three_parts() -> None:
    # Answers that are not uploaded need at most four messages.
    assert FILE_THRESHOLD // PART_LIMIT <= 4


def test_open_fence() -> None:
    assert open_fence("text\n```python\nx = 1") == "```python"
    assert open_fence("```\nx\n```\n") is None
    assert open_fence("~~~~\nx\n~~~\n") == "~~~~"
    assert open_fence("inline ```x``` only") is None
    assert fence_closer("```python") == "```"


# --------------------------------------------------------------------------- deceptive links


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        # A label naming another URL or host: the real target is shown beside it.
        ("[https://github.com/x](https://evil.example/p)", "https://github.com/x (<https://evil.example/p>)"),
        ("[github.com/acme/web](https://evil.example)", "github.com/acme/web (<https://evil.example>)"),
        ("[www.github.com](https://evil.example)", "www.github.com (<https://evil.example>)"),
        (
            "[see http://docs.acme.io/x here](https://evil.example)",
            "see http://docs.acme.io/x here (<https://evil.example>)",
        ),
        # Slack's own masked-link syntax written by the agent stays visible text.
        ("<https://evil.example|https://github.com/x>", "&lt;https://evil.example|https://github.com/x&gt;"),
        # Honest labels keep their link: plain words, the same host, a file name, an e-mail.
        ("[the retry docs](https://evil.example)", "<https://evil.example|the retry docs>"),
        ("[https://github.com/x](https://github.com/x#L3)", "<https://github.com/x#L3|https://github.com/x>"),
        ("[www.github.com/x](https://github.com/x)", "<https://github.com/x|www.github.com/x>"),
        ("[app.py](https://github.com/o/r/blob/c0ffee/app.py)", "<https://github.com/o/r/blob/c0ffee/app.py|app.py>"),
        ("[bob@acme.io](mailto:bob@acme.io)", "<mailto:bob@acme.io|bob@acme.io>"),
    ],
)
def test_deceptive_links_show_their_real_target(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_streamed_markdown_gets_the_final_messages_escaping() -> None:
    raw = "> quoted <!channel> & `a<b`\n[https://github.com/x](https://evil.example/?a=1&b=2) and [docs](https://d.io)"
    assert safe_markdown(raw) == (
        "> quoted &lt;!channel&gt; &amp; `a&lt;b`\n"
        "https://github.com/x ([https://evil.example/?a=1&amp;b=2](https://evil.example/?a=1&amp;b=2))"
        " and [docs](https://d.io)"
    )
    assert safe_markdown("<https://evil.example|https://github.com/x>") == to_mrkdwn(
        "<https://evil.example|https://github.com/x>"
    )


def test_settled_holds_back_a_link_being_written() -> None:
    assert settled("first line\nsee [https://github.com/x](https://ev") == "first line\nsee "
    assert settled("[a](https://a.io) then [b") == "[a](https://a.io) then "
    assert settled("done [a](https://a.io)\n") == "done [a](https://a.io)\n"
    assert settled("[half") == ""
