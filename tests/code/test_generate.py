"""The synthetic generator: deterministic, schema-valid, and true to its stated effects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from core.schema import ID_COLUMN, RAW_COLUMNS, REQUIRED_COLUMNS
from core.settings import TARGET_COLUMN, TRUE_PROBABILITY_COLUMN
from core.tables import TABLE_SUFFIXES
from training.data import load_table, validate_table
from training.generate import (
    ADDON_RATES,
    INTERCEPT,
    MISSING_RATES,
    bayes_optimal_auc,
    calibrate_intercept,
    generate_customers,
    write_table,
)

ADDONS = tuple(ADDON_RATES)  # the internet add-on services, as the generator defines them


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return generate_customers(20_000, seed=11)


def test_same_seed_same_table() -> None:
    pd.testing.assert_frame_equal(generate_customers(500, 3), generate_customers(500, 3))


def test_different_seeds_differ() -> None:
    a, b = generate_customers(500, 3), generate_customers(500, 4)
    assert not a[TRUE_PROBABILITY_COLUMN].equals(b[TRUE_PROBABILITY_COLUMN])


def test_has_every_schema_column(table: pd.DataFrame) -> None:
    expected = {ID_COLUMN, *RAW_COLUMNS, TARGET_COLUMN, TRUE_PROBABILITY_COLUMN}
    assert set(table.columns) == expected
    assert table[ID_COLUMN].is_unique
    assert table[ID_COLUMN].iloc[0] == "CUST0000001"


def test_churn_rate_near_ten_percent(table: pd.DataFrame) -> None:
    assert 0.07 <= table[TARGET_COLUMN].mean() <= 0.13


def test_intercept_is_calibrated() -> None:
    assert calibrate_intercept(0.10, rows=50_000, seed=1) == pytest.approx(INTERCEPT, abs=0.05)


def test_validates_cleanly(table: pd.DataFrame) -> None:
    typed = validate_table(table)
    assert len(typed) == len(table)
    assert typed[TARGET_COLUMN].isin([0, 1]).all()


def test_required_columns_complete_and_some_optional_missing(table: pd.DataFrame) -> None:
    assert table[list(REQUIRED_COLUMNS)].notna().all().all()
    for name, rate in MISSING_RATES.items():
        assert 0.5 * rate < table[name].isna().mean() < 2 * rate, name


def test_ranges_and_service_consistency(table: pd.DataFrame) -> None:
    assert table["age"].between(18, 100).all()
    assert table["tenure_months"].between(0, 72).all()
    assert (table["monthly_charges"] > 0).all()
    assert (table["total_charges"] >= 0).all()
    no_internet = table["internet_service"] == "None"
    for addon in ADDONS:
        assert not table.loc[no_internet, addon].fillna(False).any(), addon
    assert not table.loc[~table["phone_service"], "multiple_lines"].any()
    assert (table.loc[no_internet, "data_usage_gb"].fillna(0) == 0).all()
    assert (table.loc[~table["phone_service"], "phone_usage_minutes"].fillna(0) == 0).all()
    assert (table["senior_citizen"] == (table["age"] >= 65)).all()


def test_signup_date_is_snapshot_minus_tenure(table: pd.DataFrame) -> None:
    known = table.dropna(subset=["signup_date"])
    dates = pd.to_datetime(known["signup_date"])
    months = (2026 - dates.dt.year) * 12 + (1 - dates.dt.month)
    assert (months == known["tenure_months"]).all()


def test_fiber_costs_more(table: pd.DataFrame) -> None:
    means = table.groupby("internet_service")["monthly_charges"].mean()
    assert means["Fiber"] > means["DSL"] > means["None"]


def test_total_charges_follow_monthly_times_tenure(table: pd.DataFrame) -> None:
    expected = table["monthly_charges"] * table["tenure_months"]
    assert np.corrcoef(expected, table["total_charges"])[0, 1] > 0.99


def test_month_to_month_churns_more_than_two_year(table: pd.DataFrame) -> None:
    rates = table.groupby("contract")[TARGET_COLUMN].mean()
    assert rates["Month-to-month"] > rates["One year"] > rates["Two year"]


def test_true_probability_rises_with_support_calls(table: pd.DataFrame) -> None:
    means = table.groupby("support_calls")[TRUE_PROBABILITY_COLUMN].mean()
    common = means[table["support_calls"].value_counts().sort_index() >= 200]
    assert common.is_monotonic_increasing
    assert len(common) >= 4


def test_true_probability_falls_with_tenure(table: pd.DataFrame) -> None:
    new = table.loc[table["tenure_months"] <= 6, TRUE_PROBABILITY_COLUMN].mean()
    loyal = table.loc[table["tenure_months"] >= 48, TRUE_PROBABILITY_COLUMN].mean()
    assert new > 2 * loyal


def test_bayes_optimal_auc(table: pd.DataFrame) -> None:
    auc = bayes_optimal_auc(table)
    assert 0.75 <= auc <= 0.97
    expected = roc_auc_score(table[TARGET_COLUMN], table[TRUE_PROBABILITY_COLUMN])
    assert auc == pytest.approx(expected)


def test_generates_100k_rows() -> None:
    frame = generate_customers(100_000, seed=0)
    assert len(frame) == 100_000
    assert frame[ID_COLUMN].is_unique


@pytest.mark.parametrize("suffix", TABLE_SUFFIXES)
def test_write_table_round_trips(tmp_path: Path, suffix: str) -> None:
    frame = generate_customers(300, seed=5)
    path = write_table(frame, tmp_path / "nested" / f"customers{suffix}")
    assert path.is_file()
    pd.testing.assert_frame_equal(
        validate_table(load_table(path)), validate_table(frame), check_exact=False
    )


def test_write_table_refuses_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="suffix"):
        write_table(generate_customers(5, seed=1), tmp_path / "customers.xlsx")
