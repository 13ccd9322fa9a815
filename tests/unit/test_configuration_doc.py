"""docs/configuration.md is what bot/config_doc.py generates from the settings models, and
it names exactly the variables of .env.example: a setting added, renamed, re-described or
given another default without regenerating the document fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo

from bot import config_doc
from jobs.settings import JobSettings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|", re.MULTILINE)


def test_the_document_is_generated_from_the_code() -> None:
    assert DOC.read_text() == config_doc.render(), (
        "docs/configuration.md is out of date: python -m bot.config_doc > docs/configuration.md"
    )


def test_it_names_exactly_the_variables_of_env_example() -> None:
    documented = ROW.findall(DOC.read_text())
    assert len(documented) == len(set(documented)), "a variable documented twice"
    example = set(config_doc.env_example())
    assert set(documented) - example == set(), "documented but missing from .env.example"
    assert example - set(documented) == set(), "in .env.example but not documented"


def test_every_setting_says_what_it_is() -> None:
    """Each row has a description (the field's own, or .env.example's comment)."""
    empty = [line for line in DOC.read_text().splitlines() if ROW.match(line) and line.rstrip().endswith("|  |")]
    assert empty == []


def test_a_changed_field_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above really reads the fields: a new description changes the render."""
    before = config_doc.render()
    changed = FieldInfo.merge_field_infos(JobSettings.model_fields["max_waiting"], description="something else")
    monkeypatch.setitem(JobSettings.model_fields, "max_waiting", changed)
    after = config_doc.render()
    assert before != after and "something else" in after
