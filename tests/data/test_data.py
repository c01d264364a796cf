"""Loading and validating training tables: every schema rule fails loudly and precisely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy

from core.pipeline.encode import encode_frame
from core.schema import CATEGORIES, COLUMN_KINDS, RAW_COLUMNS, ColumnKind
from core.settings import TARGET_COLUMN, TRUE_PROBABILITY_COLUMN
from core.tables import TABLE_SUFFIXES, YES_NO_WORDS
from training.data import (
    DataLoadError,
    TableSchemaError,
    deduplicate,
    load_table,
    prepare_table,
    split_xy,
    validate_table,
)
from training.generate import generate_customers, write_table


@pytest.fixture
def table() -> pd.DataFrame:
    """A small valid table as plain Python objects, so any cell can hold a bad value."""
    return generate_customers(40, seed=2).astype(object)


def _break(table: pd.DataFrame, column: str, row: int, value: object) -> TableSchemaError:
    table.loc[row, column] = value
    with pytest.raises(TableSchemaError) as caught:
        validate_table(table)
    return caught.value


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("age", 17, ">= 18"),
        ("age", 101, "<= 100"),
        ("tenure_months", -1, ">= 0"),
        ("monthly_charges", 0, "> 0"),
        ("total_charges", -1, ">= 0"),
        ("support_calls", -1, ">= 0"),
        ("late_payments", -2, ">= 0"),
        ("data_usage_gb", -0.5, ">= 0"),
        ("age", 30.5, "whole number"),
        ("monthly_charges", float("inf"), "finite"),
        ("internet_service", "Cable", "must be one of"),
        ("contract", "Three year", "must be one of"),
        ("payment_method", "Bitcoin", "must be one of"),
        ("gender", "female", "must be one of"),
        ("age", "forty", "must be a number"),
        ("partner", "maybe", "must be a boolean"),
        ("signup_date", "not a date", "must be a date"),
        ("customer_id", "   ", "must not be missing"),
        (TARGET_COLUMN, "unknown", "must be a boolean"),
        (TARGET_COLUMN, 2, "must be a boolean"),
        (TARGET_COLUMN, None, "must not be missing"),
    ],
)
def test_each_rule_names_column_and_row(
    table: pd.DataFrame, column: str, value: object, rule: str
) -> None:
    error = _break(table, column, 7, value)
    [problem] = error.problems
    assert (problem.column, problem.bad_count, problem.example_rows) == (column, 1, [7])
    assert rule in problem.rule
    message = str(error)
    assert column in message and rule in message and "row 7" in message


def test_required_column_missing(table: pd.DataFrame) -> None:
    with pytest.raises(TableSchemaError, match="contract: required column missing"):
        validate_table(table.drop(columns="contract"))


def test_target_required_only_when_asked(table: pd.DataFrame) -> None:
    without = table.drop(columns=[TARGET_COLUMN])
    with pytest.raises(TableSchemaError, match=f"{TARGET_COLUMN}: required column missing"):
        validate_table(without)
    assert TARGET_COLUMN not in validate_table(without, require_target=False).columns


def test_every_bad_column_named_in_one_error(table: pd.DataFrame) -> None:
    table.loc[[1, 2, 3, 4], "age"] = [17, 5, 200, 16]
    table.loc[5, "internet_service"] = "Cable"
    table.loc[6, "support_calls"] = "lots"
    with pytest.raises(TableSchemaError) as caught:
        validate_table(table.drop(columns="payment_method"))
    error = caught.value
    assert {p.column for p in error.problems} == {
        "age",
        "internet_service",
        "support_calls",
        "payment_method",
    }
    ages = [p for p in error.problems if p.column == "age"]
    assert sum(p.bad_count for p in ages) == 4
    low = next(p for p in ages if ">= 18" in p.rule)
    assert low.example_rows == [1, 2, 4] and low.example_values == [17, 5, 16]
    message = str(error)
    for text in ("age", "internet_service", "'Cable'", "support_calls", "'lots'", "row 6"):
        assert text in message


def test_examples_capped_at_three(table: pd.DataFrame) -> None:
    table["age"] = 10
    error = _break(table, "age", 0, 10)
    assert error.problems[0].bad_count == len(table)
    assert len(error.problems[0].example_rows) == 3
    assert "row 3" not in str(error)


def test_rules_come_from_schema_not_constants(table: pd.DataFrame) -> None:
    table.loc[0, "age"] = 18
    table.loc[1, "age"] = 100
    table.loc[2, "tenure_months"] = 0
    assert validate_table(table)["age"].iloc[[0, 1]].tolist() == [18.0, 100.0]


def test_output_is_typed_for_encoding(table: pd.DataFrame) -> None:
    typed = validate_table(table)
    for name in RAW_COLUMNS:
        kind = COLUMN_KINDS[name]
        if kind is ColumnKind.NUMBER:
            assert typed[name].dtype == np.float64, name
        elif kind is ColumnKind.BOOLEAN:
            assert typed[name].dtype == "boolean", name
        elif kind is ColumnKind.CATEGORY:
            assert typed[name].dropna().isin(CATEGORIES[name]).all(), name
        else:
            assert pd.api.types.is_datetime64_dtype(typed[name]), name
    assert typed[TARGET_COLUMN].dtype == np.int64
    raw = encode_frame(typed)
    assert raw.shape == (len(table), len(RAW_COLUMNS))


def test_boolean_spellings_accepted(table: pd.DataFrame) -> None:
    spellings = ["true", "FALSE", "Yes", "no", 1, 0, True, False, "1", "0"]
    table.loc[: len(spellings) - 1, "partner"] = spellings
    table.loc[: len(spellings) - 1, TARGET_COLUMN] = spellings
    typed = validate_table(table)
    expected = [True, False, True, False, True, False, True, False, True, False]
    assert typed["partner"].iloc[: len(spellings)].tolist() == expected
    assert typed[TARGET_COLUMN].iloc[: len(spellings)].tolist() == [int(v) for v in expected]


def test_gzipped_csv_with_single_letter_yes_no_words(tmp_path: Path) -> None:
    """The words and file types label files accept (`core.tables`) work here too."""
    frame = generate_customers(12, seed=4)
    words = ["y", "N", " t ", "F"] * 3
    frame["partner"] = words
    frame[TARGET_COLUMN] = words
    path = tmp_path / "customers.csv.gz"
    frame.to_csv(path, index=False)  # gzip inferred from the name
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    typed = validate_table(load_table(path))
    expected = [True, False, True, False] * 3
    assert typed["partner"].tolist() == expected
    assert typed[TARGET_COLUMN].tolist() == [int(v) for v in expected]


def test_every_yes_no_word_of_core_tables(table: pd.DataFrame) -> None:
    words = sorted(YES_NO_WORDS)
    table.loc[: len(words) - 1, "partner"] = [w.upper() for w in words]
    typed = validate_table(table)
    assert typed["partner"].iloc[: len(words)].tolist() == [YES_NO_WORDS[w] for w in words]


def test_missing_values_allowed(table: pd.DataFrame) -> None:
    for column in ("age", "internet_service", "tech_support", "signup_date", "late_payments"):
        table.loc[[3, 4], column] = None
    table.loc[5, "gender"] = ""
    typed = validate_table(table)
    assert typed["age"].isna().sum() == 2
    assert typed["gender"].isna().iloc[5]
    assert np.isnan(encode_frame(typed)[3]).sum() >= 5


def test_unknown_columns_dropped_truth_kept(table: pd.DataFrame) -> None:
    table["notes"] = "x"
    typed = validate_table(table)
    assert "notes" not in typed.columns
    assert TRUE_PROBABILITY_COLUMN in typed.columns


def test_deduplicate_keeps_first(table: pd.DataFrame) -> None:
    frame = pd.DataFrame({"customer_id": ["a", "b", "a", "c", "b"], "age": [1, 2, 3, 4, 5]})
    kept, dropped = deduplicate(frame)
    assert dropped == 2
    assert kept["customer_id"].tolist() == ["a", "b", "c"]
    assert kept["age"].tolist() == [1, 2, 4]


def test_prepare_table_reports(table: pd.DataFrame) -> None:
    doubled = pd.concat([table, table.iloc[:5]], ignore_index=True)
    doubled.loc[0, "age"] = None
    cleaned, report = prepare_table(doubled)
    assert (report.rows_in, report.rows_out, report.duplicates_dropped) == (45, 40, 5)
    assert report.missing_fraction["age"] == pytest.approx(1 / 40)
    assert report.churn_rate == pytest.approx(cleaned[TARGET_COLUMN].mean())
    assert report.to_dict()["duplicates_dropped"] == 5


def test_split_xy(table: pd.DataFrame) -> None:
    features, y = split_xy(validate_table(table))
    assert TARGET_COLUMN not in features.columns
    assert TRUE_PROBABILITY_COLUMN not in features.columns
    assert y.dtype == np.int64 and set(np.unique(y)) <= {0, 1}
    assert len(features) == len(y) == len(table)


@pytest.mark.parametrize("suffix", TABLE_SUFFIXES)
def test_file_round_trip(tmp_path: Path, suffix: str) -> None:
    frame = generate_customers(200, seed=9)
    path = write_table(frame, tmp_path / f"customers{suffix}")
    loaded = validate_table(load_table(path))
    pd.testing.assert_frame_equal(loaded, validate_table(frame), check_exact=False)
    assert (loaded["internet_service"] == "None").any()  # not read as missing


def test_sql_round_trip(tmp_path: Path) -> None:
    frame = generate_customers(200, seed=9)
    url = f"sqlite:///{tmp_path / 'customers.db'}"
    engine = sqlalchemy.create_engine(url)
    frame.to_sql("customers", engine, index=False)
    engine.dispose()
    loaded = validate_table(load_table(url, "SELECT * FROM customers"))
    pd.testing.assert_frame_equal(loaded, validate_table(frame), check_exact=False)


def test_sql_needs_query(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match="needs a query"):
        load_table(f"sqlite:///{tmp_path / 'customers.db'}")


def test_sql_bad_query(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match="query failed"):
        load_table(f"sqlite:///{tmp_path / 'customers.db'}", "SELECT * FROM nowhere")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match="no such file"):
        load_table(tmp_path / "absent.csv")


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "customers.xlsx"
    path.write_text("x")
    with pytest.raises(DataLoadError, match="unknown suffix") as caught:
        load_table(path)
    assert all(suffix in str(caught.value) for suffix in TABLE_SUFFIXES)


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "customers.parquet"
    path.write_text("not parquet")
    with pytest.raises(DataLoadError, match="cannot read"):
        load_table(path)


def test_database_password_not_in_errors() -> None:
    with pytest.raises(DataLoadError) as caught:
        load_table("postgresql+nosuchdriver://user:s3cret@localhost/db", "SELECT 1")
    assert "s3cret" not in str(caught.value)
