"""The lock files pin every dependency pyproject.toml names (`make lock` regenerates them).

requirements.lock is what the app image and .ci/run install; a dependency added to
pyproject.toml without `make lock` would be missing there (the app image once failed to
start for want of pathspec). Checked by name and range, without a resolver or a network.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pinned(lock: str) -> dict[str, str]:
    found = {}
    for line in (ROOT / lock).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


@pytest.mark.parametrize(
    ("lock", "groups"),
    [
        ("requirements.lock", ["dependencies"]),
        ("requirements-dev.lock", ["dependencies", "test", "dev"]),
    ],
)
def test_every_dependency_is_pinned_within_its_range(lock: str, groups: list[str]) -> None:
    versions = pinned(lock)
    wanted = [
        Requirement(r)
        for g in groups
        for r in (PYPROJECT[g] if g == "dependencies" else PYPROJECT["optional-dependencies"][g])
    ]
    missing = [str(r) for r in wanted if canonicalize_name(r.name) not in versions]
    assert missing == [], f"{lock} lacks {missing}: run `make lock`"
    outside = [
        f"{r} (locked {versions[canonicalize_name(r.name)]})"
        for r in wanted
        if not r.specifier.contains(versions[canonicalize_name(r.name)], prereleases=True)
    ]
    assert outside == [], f"{lock} pins versions pyproject.toml excludes: {outside}: run `make lock`"


def test_the_dev_lock_agrees_with_the_service_lock() -> None:
    service, dev = pinned("requirements.lock"), pinned("requirements-dev.lock")
    differ = {name: (v, dev[name]) for name, v in service.items() if name in dev and dev[name] != v}
    assert differ == {}
