"""`--on-bad-rows`: fail names every broken rule; skip sets the rows aside and reports them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from training.bad_rows import TooFewRowsError, validate_or_skip
from training.data import TableSchemaError
from training.generate import generate_customers

CONTRACT_RULE = "must be one of ['Month-to-month', 'One year', 'Two year']"


@pytest.fixture
def table() -> pd.DataFrame:
    """60 customers, two with a negative tenure, one (also negative) with a made-up contract."""
    frame = generate_customers(60, seed=5).astype(object)
    frame.loc[[4, 9], "tenure_months"] = -3
    frame.loc[[9, 31], "contract"] = "Weekly"
    return frame


def test_fail_names_column_rule_count_and_examples(table: pd.DataFrame) -> None:
    with pytest.raises(TableSchemaError) as caught:
        validate_or_skip(table, (), "fail", 10, 1)
    message = str(caught.value)
    assert "tenure_months: must be >= 0 — 2 bad row(s), e.g. row 4 (-3), row 9 (-3)" in message
    assert f"contract: {CONTRACT_RULE} — 2 bad row(s), e.g. row 9 ('Weekly'), row 31" in message


def test_skip_sets_bad_rows_aside_and_reports_them(table: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "out" / "bad_rows.json"
    typed, report = validate_or_skip(table, (), "skip", 10, 1, path)
    kept = table.drop(index=[4, 9, 31])["customer_id"].tolist()
    assert typed["customer_id"].tolist() == kept  # every other row, in order
    assert report is not None and (report.rows_in, report.rows_skipped) == (60, 3)
    saved = json.loads(path.read_text())
    assert saved["rows_left"] == 57
    counts = {(r["column"], r["rule"]): r["count"] for r in saved["rules"]}
    assert counts == {("tenure_months", "must be >= 0"): 2, ("contract", CONTRACT_RULE): 2}
    tenure = saved["rules"][0]["examples"]
    assert [e["row"] for e in tenure] == [4, 9] and tenure[0]["value"] == -3
    assert tenure[1]["customer_id"] == table.loc[9, "customer_id"]


def test_a_clean_table_is_untouched_by_skip(tmp_path: Path) -> None:
    frame = generate_customers(30, seed=5)
    typed, report = validate_or_skip(frame, (), "skip", 10, 1, tmp_path / "bad_rows.json")
    assert report is None and len(typed) == 30 and not (tmp_path / "bad_rows.json").exists()


def test_too_few_rows_left_fails_clearly_and_still_reports(
    table: pd.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "bad_rows.json"
    with pytest.raises(TooFewRowsError, match=r"at least 58 rows \(min_training_rows\).*57 rows"):
        validate_or_skip(table, (), "skip", 58, 1, path)
    assert json.loads(path.read_text())["rows_skipped"] == 3
    with pytest.raises(TooFewRowsError, match="1000 of each label"):
        validate_or_skip(table, (), "skip", 10, 1000)


def test_a_missing_column_is_never_skipped(table: pd.DataFrame) -> None:
    with pytest.raises(TableSchemaError, match="contract: required column missing"):
        validate_or_skip(table.drop(columns="contract"), (), "skip", 10, 1)
