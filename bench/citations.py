"""Citations on real-shaped answers: the share of real references linked, and the false links.

Reference answers of our own writing (bench/data/citations_flask.json) refer to a public
repository at a pinned commit in the shapes real code-QA answers take: paths with their
lines in words ("`src/flask/json/provider.py` (lines 144-148)"), lines that refer to the
file named last ("the `dumps` method (lines 166-179)"), bare file names (`sessions.py`),
symbols (`Blueprint._check_setup_finished`), and made-up files and lines. Each answer
lists the targets a reader means (file, lines); the linker (jobs/citations.py, with the
tree's ctags index, jobs/tree_index.py) is run on the commit's tree and its links are
compared with them:

- linked: the share of the real references whose exact target (file and lines) was linked;
- whole-file links where the answer meant lines of that file (imprecise, not false);
- false links: links to anything else (a made-up file cannot be linked at all; this counts
  the wrong file or the wrong lines).

The repository is not part of askbox; fetch it first::

    git clone https://github.com/pallets/flask /tmp/flask
    python bench/citations.py --repo /tmp/flask      # the commit is the data file's

``--baseline DIR`` measures another askbox tree's linker in the same run (e.g. a checkout of
an older commit: ``git worktree add /tmp/askbox-before <commit>``) and prints both.
``--quick`` needs no repository: a tiny generated one and two answers.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quick import parse_args  # noqa: E402  (bench/quick.py, beside this script)

DATA = ROOT / "bench" / "data" / "citations_flask.json"
REMOTE = "https://github.com/example/repo"  # any recognised host: only the links' shape matters
QUICK_FILES = {
    "src/app/core.py": "class Engine:\n    def start(self):\n        return 1\n\n\ndef helper():\n    return 2\n",
    "src/app/util.py": "def helper_two():\n    pass\n",
    "docs/util.py": "x = 1\n",
}
QUICK_ANSWERS = [
    {
        "text": "`Engine.start` in `src/app/core.py` (lines 2-3) calls `helper` (line 6); see `core.py`.",
        "real": [
            ["src/app/core.py", 2, None],
            ["src/app/core.py", 2, 3],
            ["src/app/core.py", 6, None],
            ["src/app/core.py", 6, None],
            ["src/app/core.py", None, None],
        ],
    },
    {
        "text": "Not `util.py` (two of them), not `src/app/gone.py` (lines 1-2); `helper_two` is real.",
        "real": [["src/app/util.py", None, None], ["src/app/util.py", 1, None]],
    },
]


def export(repo: Path, commit: str, into: Path) -> None:
    """The commit's tree, as a snapshot holds it (no .git)."""
    with tempfile.TemporaryFile() as archive:
        subprocess.run(
            ["git", "-c", "safe.directory=*", "-C", str(repo), "archive", "--format=tar", commit],
            stdout=archive,
            check=True,
        )
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            tar.extractall(into, filter="data")


def quick_repo(into: Path) -> tuple[Path, str]:
    for path, text in QUICK_FILES.items():
        (into / path).parent.mkdir(parents=True, exist_ok=True)
        (into / path).write_text(text)
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    for argv in (["init", "-q"], ["add", "-A"], [*ident, "commit", "-qm", "quick"]):
        subprocess.run(["git", "-C", str(into), *argv], check=True, env=env)
    head = subprocess.run(["git", "-C", str(into), "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return into, head.stdout.strip()


def measure(tree: Path, commit: str, answers: list[dict]) -> dict:
    """Run this interpreter's jobs.citations over ``answers`` (in the tree at ``tree``)."""
    from jobs import citations
    from jobs.web_host import web_host

    host = web_host(REMOTE)
    assert host is not None
    started = time.perf_counter()
    index = None
    if "index" in inspect.signature(citations.link_citations).parameters:  # older linkers have none
        from jobs.tree_index import build_index, lazy

        index = lazy(lambda: build_index(tree))
        index()  # built once per commit; timed apart from the answers
    built = time.perf_counter() - started
    prefix = host.file_url(commit, "")
    real = linked = imprecise = false = 0
    wrong: list[str] = []
    started = time.perf_counter()
    for answer in answers:
        args = (answer["text"], tree, commit, host) + ((index,) if index else ())
        out = citations.link_citations(*args)
        expected = Counter(tuple(t) for t in answer["real"])
        made = Counter(_target(url, prefix) for url in re.findall(r"\]\((https://[^)\s]+)\)", out))
        hits = expected & made
        real += sum(expected.values())
        linked += sum(hits.values())
        extra = made - hits
        # A whole-file link where lines were meant is imprecise, not false.
        meant = {path for path, _, _ in expected}
        loose = Counter({t: n for t, n in extra.items() if t[0] in meant and t[1] is None})
        imprecise += sum(loose.values())
        false += sum((extra - loose).values())
        wrong += [f"{target} in {answer['text'][:60]!r}" for target in extra - loose]
    return {
        "real": real,
        "linked": linked,
        "imprecise": imprecise,
        "false_links": false,
        "false": wrong,
        "index_seconds": round(built, 3),
        "answers_seconds": round(time.perf_counter() - started, 3),
    }


def _target(url: str, prefix: str) -> tuple[str, int | None, int | None]:
    path, _, fragment = url.removeprefix(prefix).partition("#")
    numbers = [int(n) for n in re.findall(r"\d+", fragment)]
    return path, numbers[0] if numbers else None, numbers[1] if len(numbers) > 1 else None


def run_in(askbox: Path, tree: Path, commit: str, answers: list[dict]) -> dict:
    """``measure`` with the linker of another askbox tree, in a fresh interpreter."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2]); "
        "from citations import measure; from pathlib import Path; "
        "print(json.dumps(measure(Path(sys.argv[3]), sys.argv[4], json.load(sys.stdin))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(askbox), str(Path(__file__).parent), str(tree), commit],
        input=json.dumps(answers),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(askbox)},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(name: str, result: dict) -> None:
    share = result["linked"] / result["real"] if result["real"] else 0.0
    print(
        f"{name:10} real references linked {result['linked']:3d}/{result['real']:<3d} ({share:6.1%})   "
        f"whole-file links where lines were meant {result['imprecise']:2d}   "
        f"false links {result['false_links']:2d}   index {result['index_seconds']:.2f} s   "
        f"answers {result['answers_seconds']:.3f} s"
    )
    for line in result["false"]:
        print(f"{'':10} false: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, help="a clone of the data file's repository")
    parser.add_argument("--commit", help="default: the data file's commit")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--baseline", type=Path, help="another askbox tree whose linker to measure too (before)")
    args = parse_args(parser)
    with tempfile.TemporaryDirectory() as scratch:
        if args.quick:
            repo, commit = quick_repo(Path(scratch) / "repo")
            answers = QUICK_ANSWERS
        else:
            if args.repo is None:
                parser.error("--repo: a clone of the data file's repository (see the module's docstring)")
            data = json.loads(args.data.read_text())
            repo, commit, answers = args.repo, args.commit or data["commit"], data["answers"]
        tree = Path(scratch) / "tree"
        tree.mkdir()
        export(repo, commit, tree)
        print(f"{len(answers)} answers on {commit[:12]} ({sum(len(a['real']) for a in answers)} real references)")
        if args.baseline:
            report("before", run_in(args.baseline.resolve(), tree, commit, answers))
        report("after" if args.baseline else "linker", measure(tree, commit, answers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
