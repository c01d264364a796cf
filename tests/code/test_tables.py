"""core/tables.py: the one list of table file types and yes/no words every reader uses."""

from __future__ import annotations

import pytest

from core.tables import (
    FALSE_WORDS,
    TABLE_SUFFIXES,
    TRUE_WORDS,
    accepted_suffixes,
    parse_yes_no,
    table_kind,
)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("a.csv", "csv"),
        ("dir.v2/A.CSV.GZ", "csv"),
        ("a.parquet", "parquet"),
        ("a.PQ", "parquet"),
        ("a.gz", None),
        ("a.csv.zip", None),
        ("a.xlsx", None),
        ("csv", None),
    ],
)
def test_table_kind_by_ending(name: str, kind: str | None) -> None:
    assert table_kind(name) == kind


def test_the_accepted_types_are_said_from_the_constant() -> None:
    assert accepted_suffixes() == ".csv, .csv.gz, .parquet or .pq"
    assert set(TABLE_SUFFIXES.values()) == {"csv", "parquet"}


@pytest.mark.parametrize("word", sorted(TRUE_WORDS | FALSE_WORDS))
def test_every_word_in_any_case_and_padding(word: str) -> None:
    assert parse_yes_no(f" {word.upper()} ") is (word in TRUE_WORDS)


def test_values_that_are_already_yes_or_no() -> None:
    assert [parse_yes_no(v) for v in (True, False, 1, 0, 1.0, 0.0)] == [True, False] * 3
    assert not TRUE_WORDS & FALSE_WORDS


@pytest.mark.parametrize("value", ["maybe", "", "2", 2, 0.5, None, "yess"])
def test_anything_else_is_refused_with_the_words(value: object) -> None:
    with pytest.raises(ValueError, match=r"is not a boolean \(true/false, yes/no"):
        parse_yes_no(value)
