"""CustomerCleaner: imputation, sparse-column dropping, IQR caps learned on training only."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from core.pipeline.clean import CustomerCleaner
from core.pipeline.encode import RAW_INDEX, encode_customers
from core.schema import RAW_COLUMNS, CustomerData

pytestmark = pytest.mark.filterwarnings("error")  # no RuntimeWarning on the hot path

FULL_CUSTOMER = CustomerData(
    customer_id="full",
    age=40,
    tenure_months=12,
    monthly_charges=50.0,
    total_charges=600.0,
    support_calls=1,
    internet_service="DSL",
    contract="One year",
    payment_method="Mailed check",
    signup_date=date(2023, 1, 1),
    late_payments=0,
    billing_issues=0,
    phone_service=True,
    multiple_lines=False,
    online_security=True,
    online_backup=False,
    device_protection=True,
    tech_support=False,
    streaming_tv=True,
    streaming_movies=False,
    paperless_billing=True,
    data_usage_gb=10.0,
    phone_usage_minutes=200.0,
    gender="Female",
    senior_citizen=False,
    partner=True,
    dependents=False,
)


def full_matrix(n_rows: int) -> np.ndarray:
    """n identical, fully observed rows; tests overwrite the columns they study."""
    return encode_customers([FULL_CUSTOMER] * n_rows)


def with_column(matrix: np.ndarray, name: str, values: list[float]) -> np.ndarray:
    out = matrix.copy()
    out[:, RAW_INDEX[name]] = values
    return out


NAN = float("nan")


@pytest.mark.parametrize(
    ("column", "values", "expected_fill"),
    [
        ("monthly_charges", [10.0, 20.0, 30.0, NAN], 20.0),  # median, NUMBER
        ("support_calls", [1.0, 2.0, 4.0, 7.0, NAN], 3.0),  # median of an even count
        ("signup_date", [100.0, 200.0, 400.0, NAN], 200.0),  # median, DATE
        ("partner", [1.0, 1.0, 0.0, NAN], 1.0),  # mode, BOOLEAN
        ("contract", [2.0, 0.0, 2.0, 1.0, NAN], 2.0),  # mode, CATEGORY
        ("internet_service", [2.0, 0.0, NAN, NAN], 0.0),  # tie → smallest code
    ],
)
def test_imputes_median_or_mode(column: str, values: list[float], expected_fill: float) -> None:
    X = with_column(full_matrix(len(values)), column, values)
    cleaner = CustomerCleaner().fit(X)
    assert cleaner.fill_values_[RAW_INDEX[column]] == expected_fill
    before, after = X[:, RAW_INDEX[column]], cleaner.transform(X)[:, RAW_INDEX[column]]
    gap = np.isnan(before)
    assert (after[gap] == expected_fill).all()
    np.testing.assert_array_equal(after[~gap], before[~gap])


@pytest.mark.parametrize(
    ("n_missing", "dropped"),
    [(0, False), (1, False), (2, False), (3, True), (4, True)],  # 2/4 = 50 % is kept
)
def test_drops_columns_missing_over_half(n_missing: int, dropped: bool) -> None:
    values = [5.0] * (4 - n_missing) + [NAN] * n_missing
    X = with_column(full_matrix(4), "data_usage_gb", values)
    cleaner = CustomerCleaner().fit(X)
    j = RAW_INDEX["data_usage_gb"]
    assert cleaner.missing_fraction_[j] == n_missing / 4
    assert bool(cleaner.dropped_[j]) is dropped
    out = cleaner.transform(with_column(full_matrix(2), "data_usage_gb", [7.0, NAN]))
    if dropped:
        assert np.isnan(out[:, j]).all()  # even the observed value is blanked
        assert np.isnan(cleaner.fill_values_[j])
        assert cleaner.upper_caps_[j] == np.inf
    else:
        assert out[0, j] == 7.0  # training IQR is 0: no caps, the value survives
        assert out[1, j] == 5.0  # imputed with the median


def test_zero_spread_column_is_not_capped() -> None:
    """Mostly-zero counts (late payments) keep their rare non-zero values."""
    train = with_column(full_matrix(8), "late_payments", [0.0] * 7 + [3.0])
    cleaner = CustomerCleaner().fit(train)
    j = RAW_INDEX["late_payments"]
    assert (cleaner.lower_caps_[j], cleaner.upper_caps_[j]) == (-np.inf, np.inf)
    assert cleaner.transform(train)[7, j] == 3.0


def test_all_missing_column_dropped_even_when_threshold_allows_it() -> None:
    X = with_column(full_matrix(3), "late_payments", [NAN] * 3)
    cleaner = CustomerCleaner(max_missing_fraction=1.0).fit(X)
    assert cleaner.dropped_[RAW_INDEX["late_payments"]]


@pytest.mark.parametrize(
    ("multiplier", "lower", "upper"),
    [(1.5, -10.0, 70.0), (0.0, 20.0, 40.0), (3.0, -40.0, 100.0)],
)
def test_iqr_caps_come_from_training_matrix(multiplier: float, lower: float, upper: float) -> None:
    # Training Q1 = 20, Q3 = 40, IQR = 20.
    train = with_column(full_matrix(5), "monthly_charges", [10.0, 20.0, 30.0, 40.0, 50.0])
    cleaner = CustomerCleaner(iqr_multiplier=multiplier).fit(train)
    j = RAW_INDEX["monthly_charges"]
    assert (cleaner.lower_caps_[j], cleaner.upper_caps_[j]) == (lower, upper)
    # A matrix with its own, much wider spread is clipped to the training caps.
    other = with_column(full_matrix(3), "monthly_charges", [1000.0, -500.0, 30.0])
    np.testing.assert_array_equal(cleaner.transform(other)[:, j], [upper, lower, 30.0])


@pytest.mark.parametrize("column", ["signup_date", "contract", "partner"])
def test_non_number_columns_are_not_capped(column: str) -> None:
    train = with_column(full_matrix(5), column, [0.0, 0.0, 0.0, 0.0, 1.0])
    cleaner = CustomerCleaner().fit(train)
    j = RAW_INDEX[column]
    assert (cleaner.lower_caps_[j], cleaner.upper_caps_[j]) == (-np.inf, np.inf)
    assert cleaner.transform(train)[4, j] == 1.0


def sparse_customers(n: int, seed: int) -> list[CustomerData]:
    """Customers whose optional fields are each missing ~30 % of the time."""
    rng = np.random.default_rng(seed)
    optional = {
        name: getattr(FULL_CUSTOMER, name)
        for name in RAW_COLUMNS
        if not CustomerData.model_fields[name].is_required()
    }
    out = []
    for i in range(n):
        kept = {k: v for k, v in optional.items() if rng.random() > 0.3}
        out.append(
            FULL_CUSTOMER.model_copy(
                update={
                    **dict.fromkeys(optional),
                    **kept,
                    "customer_id": f"c{i}",
                    "tenure_months": int(rng.integers(0, 80)),
                    "monthly_charges": float(rng.uniform(10, 150)),
                }
            )
        )
    return out


def test_no_nan_left_in_kept_columns() -> None:
    X = encode_customers(sparse_customers(200, seed=1))
    X[:, RAW_INDEX["billing_issues"]] = NAN  # one column certainly dropped
    cleaner = CustomerCleaner().fit(X)
    out = cleaner.transform(encode_customers(sparse_customers(50, seed=2)))
    kept = ~cleaner.dropped_
    assert kept.sum() == len(RAW_COLUMNS) - 1
    assert not np.isnan(out[:, kept]).any()
    assert np.isnan(out[:, ~kept]).all()


def test_refit_overwrites_learned_state() -> None:
    first = with_column(full_matrix(4), "monthly_charges", [1.0, 2.0, 3.0, NAN])
    second = with_column(full_matrix(4), "monthly_charges", [NAN, NAN, NAN, 9.0])
    refitted = CustomerCleaner().fit(first).fit(second)
    fresh = CustomerCleaner().fit(second)
    for name in ("missing_fraction_", "dropped_", "fill_values_", "lower_caps_", "upper_caps_"):
        np.testing.assert_array_equal(getattr(refitted, name), getattr(fresh, name))
    assert refitted.dropped_[RAW_INDEX["monthly_charges"]]


@pytest.mark.parametrize("method", ["transform", "get_feature_names_out"])
def test_use_before_fit_raises(method: str) -> None:
    cleaner = CustomerCleaner()
    with pytest.raises(NotFittedError):
        if method == "transform":
            cleaner.transform(full_matrix(1))
        else:
            cleaner.get_feature_names_out()


def test_rejects_wrong_width() -> None:
    with pytest.raises(ValueError, match="columns"):
        CustomerCleaner().fit(np.zeros((3, len(RAW_COLUMNS) - 1)))
    cleaner = CustomerCleaner().fit(full_matrix(3))
    with pytest.raises(ValueError, match="columns"):
        cleaner.transform(np.zeros((1, len(RAW_COLUMNS) + 1)))


def test_shape_names_and_input_untouched() -> None:
    X = with_column(full_matrix(3), "age", [20.0, NAN, 30.0])
    before = X.copy()
    cleaner = CustomerCleaner().fit(X)
    out = cleaner.transform(X)
    assert out.shape == X.shape
    assert out.dtype == np.float64
    np.testing.assert_array_equal(X, before)
    assert cleaner.n_features_in_ == len(RAW_COLUMNS)
    assert list(cleaner.get_feature_names_out()) == list(RAW_COLUMNS)


def test_state_survives_json_round_trip() -> None:
    """The model store saves params + `_` attributes as JSON and restores with setattr."""
    X = encode_customers(sparse_customers(100, seed=3))
    cleaner = CustomerCleaner(max_missing_fraction=0.4, iqr_multiplier=2.0).fit(X)
    state = {k: v for k, v in vars(cleaner).items() if k.endswith("_")}
    payload = json.dumps(
        {
            "params": cleaner.get_params(),
            "state": {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in state.items()},
        }
    )
    loaded = json.loads(payload)
    restored = CustomerCleaner(**loaded["params"])
    for name, value in loaded["state"].items():
        setattr(restored, name, value)
    probe = encode_customers(sparse_customers(20, seed=4))
    np.testing.assert_array_equal(restored.transform(probe), cleaner.transform(probe))
