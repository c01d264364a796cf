"""ChurnFeatures: each engineered feature against hand-computed rows, NaN handling, invariance."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from core.pipeline.clean import CustomerCleaner
from core.pipeline.encode import RAW_INDEX, encode_customers
from core.pipeline.features import (
    ENGINEERED_FEATURES,
    FEATURE_NAMES,
    PASSTHROUGH_FEATURES,
    ChurnFeatures,
)
from core.schema import RAW_COLUMNS, CustomerData

pytestmark = pytest.mark.filterwarnings("error")  # no RuntimeWarning on the hot path

NAN = float("nan")
DESIGN_FEATURES = (
    "is_new_customer",
    "loyalty_level",
    "tenure_months_binned",
    "tenure_years",
    "days_since_signup",
    "customer_lifetime_value",
    "monthly_to_total_ratio",
    "price_per_service",
    "avg_monthly_spend",
    "payment_method_risk_score",
    "has_autopay",
    "late_payment_count",
    "billing_issues_count",
    "total_services_count",
    "internet_service_type_encoded",
    "has_premium_services",
    "service_adoption_rate",
    "data_usage_level",
    "phone_usage_level",
    "streaming_services_count",
    "support_calls_per_month",
    "contract_type_risk",
    "contract_length_months",
    "has_device_protection",
    "engagement_score",
)
"""The 25 names of ARCHITECTURE.md, written out so a rename cannot pass unnoticed."""

REFERENCE_DAY = date(2024, 3, 1)


def epoch_days(day: date) -> float:
    return float((day - date(1970, 1, 1)).days)


def training_matrix() -> np.ndarray:
    """Fit data with known learned state: latest signup 2024-03-01, usage tertile cuts
    data 3 / 6 GB and phone 300 / 600 minutes (np.quantile of 0, 3, 6, 9 and 0…900)."""
    X = np.full((4, len(RAW_COLUMNS)), NAN)
    X[:, RAW_INDEX["signup_date"]] = [epoch_days(REFERENCE_DAY), epoch_days(date(2020, 5, 5))] + [
        NAN
    ] * 2
    X[:, RAW_INDEX["data_usage_gb"]] = [0.0, 3.0, 6.0, 9.0]
    X[:, RAW_INDEX["phone_usage_minutes"]] = [0.0, 300.0, 600.0, 900.0]
    return X


@pytest.fixture(scope="module")
def fitted() -> ChurnFeatures:
    return ChurnFeatures().fit(training_matrix())


def customer(**fields: Any) -> CustomerData:
    """A customer with the required fields defaulted; every optional field missing."""
    base: dict[str, Any] = {
        "customer_id": "c",
        "age": 30,
        "tenure_months": 12,
        "monthly_charges": 50.0,
        "total_charges": 600.0,
        "support_calls": 0,
        "internet_service": "DSL",
        "contract": "One year",
        "payment_method": "Mailed check",
    }
    return CustomerData(**{**base, **fields})


HAND_ROWS: dict[str, CustomerData] = {
    "new_fiber_heavy_caller": customer(
        age=25,
        tenure_months=2,
        monthly_charges=50.0,
        total_charges=100.0,
        support_calls=3,
        internet_service="Fiber",
        contract="Month-to-month",
        payment_method="Electronic check",
        signup_date=date(2024, 1, 1),
        late_payments=2,
        billing_issues=1,
        phone_service=True,
        multiple_lines=False,
        online_security=False,
        online_backup=True,
        device_protection=False,
        tech_support=False,
        streaming_tv=True,
        streaming_movies=True,
        paperless_billing=True,
        data_usage_gb=7.0,
        phone_usage_minutes=100.0,
        gender="Male",
        senior_citizen=False,
        partner=True,
        dependents=False,
    ),
    "loyal_dsl_partly_missing": customer(
        tenure_months=30,
        monthly_charges=80.0,
        total_charges=0.0,
        support_calls=0,
        internet_service="DSL",
        contract="Two year",
        payment_method="Credit card (automatic)",
        phone_service=True,
        multiple_lines=True,
        online_security=True,
        device_protection=True,
        tech_support=True,
        streaming_tv=False,
        phone_usage_minutes=600.0,
    ),
    "brand_new_no_internet": customer(
        tenure_months=0,
        monthly_charges=20.0,
        total_charges=0.0,
        support_calls=5,
        internet_service="None",
        contract="One year",
        payment_method="Mailed check",
        signup_date=date(2024, 3, 1),
        late_payments=0,
        billing_issues=0,
        data_usage_gb=3.0,
        phone_usage_minutes=300.0,
    ),
    "champion_everything": customer(
        tenure_months=72,
        monthly_charges=100.0,
        total_charges=7000.0,
        support_calls=1,
        internet_service="Fiber",
        contract="One year",
        payment_method="Bank transfer (automatic)",
        signup_date=date(2018, 3, 1),
        **dict.fromkeys(
            (
                "phone_service",
                "multiple_lines",
                "online_security",
                "online_backup",
                "device_protection",
                "tech_support",
                "streaming_tv",
                "streaming_movies",
            ),
            True,
        ),
        data_usage_gb=9.0,
        phone_usage_minutes=900.0,
    ),
}

# Worked out by hand (see the comments); not recomputed with the transformer's formulas.
EXPECTED: dict[str, dict[str, float]] = {
    "new_fiber_heavy_caller": {
        "is_new_customer": 1,
        "loyalty_level": 0,
        "tenure_months_binned": 0,
        "tenure_years": 2 / 12,
        "days_since_signup": 60,  # Jan 31 + Feb 29 (2024 is a leap year)
        "customer_lifetime_value": 100,
        "monthly_to_total_ratio": 0.5,
        "price_per_service": 10,  # 50 / 5 services
        "avg_monthly_spend": 50,
        "payment_method_risk_score": 1.0,
        "has_autopay": 0,
        "late_payment_count": 2,
        "billing_issues_count": 1,
        "total_services_count": 5,  # phone, internet, backup, tv, movies
        "internet_service_type_encoded": 2,
        "has_premium_services": 1,  # online_backup
        "service_adoption_rate": 5 / 9,
        "data_usage_level": 2,  # 7 ≥ 6
        "phone_usage_level": 0,  # 100 < 300
        "streaming_services_count": 2,
        "support_calls_per_month": 1.5,
        "contract_type_risk": 2,
        "contract_length_months": 1,
        "has_device_protection": 0,
        "engagement_score": 7 / 36,  # (40/72 + 2/72 + 0) / 3
    },
    "loyal_dsl_partly_missing": {
        "is_new_customer": 0,
        "loyalty_level": 2,
        "tenure_months_binned": 3,
        "tenure_years": 2.5,
        "days_since_signup": 913.125,  # no signup date: 30 × 30.4375
        "customer_lifetime_value": 2400,
        "monthly_to_total_ratio": 1.0,  # nothing billed yet
        "price_per_service": 80 / 6,
        "avg_monthly_spend": 0,
        "payment_method_risk_score": 0.1,
        "has_autopay": 1,
        "late_payment_count": NAN,
        "billing_issues_count": NAN,
        "total_services_count": 6,  # phone, lines, internet, security, device, tech
        "internet_service_type_encoded": 1,
        "has_premium_services": 1,
        "service_adoption_rate": 6 / 9,
        "data_usage_level": NAN,
        "phone_usage_level": 2,  # 600 ≥ 600
        "streaming_services_count": 0,
        "support_calls_per_month": 0,
        "contract_type_risk": 0,
        "contract_length_months": 24,
        "has_device_protection": 1,
        "engagement_score": 150 / 216,  # (48/72 + 30/72 + 72/72) / 3
    },
    "brand_new_no_internet": {
        "is_new_customer": 1,
        "loyalty_level": 0,
        "tenure_months_binned": 0,
        "tenure_years": 0,
        "days_since_signup": 0,
        "customer_lifetime_value": 0,
        "monthly_to_total_ratio": 1.0,
        "price_per_service": 20,  # denominator floored at 1
        "avg_monthly_spend": 0,
        "payment_method_risk_score": 0.6,
        "has_autopay": 0,
        "late_payment_count": 0,
        "billing_issues_count": 0,
        "total_services_count": 0,
        "internet_service_type_encoded": 0,
        "has_premium_services": 0,
        "service_adoption_rate": 0,
        "data_usage_level": 1,  # 3 ≤ 3 < 6
        "phone_usage_level": 1,
        "streaming_services_count": 0,
        "support_calls_per_month": 5,  # tenure floored at 1
        "contract_type_risk": 1,
        "contract_length_months": 12,
        "has_device_protection": 0,
        "engagement_score": 0,  # (0 + 0 + (1 - 1)) / 3
    },
    "champion_everything": {
        "is_new_customer": 0,
        "loyalty_level": 3,
        "tenure_months_binned": 5,
        "tenure_years": 6,
        "days_since_signup": 2192,  # 6 × 365 + 29 Feb 2020 and 2024
        "customer_lifetime_value": 7200,
        "monthly_to_total_ratio": 1 / 70,
        "price_per_service": 100 / 9,
        "avg_monthly_spend": 7000 / 72,
        "payment_method_risk_score": 0.2,
        "has_autopay": 1,
        "late_payment_count": NAN,
        "billing_issues_count": NAN,
        "total_services_count": 9,
        "internet_service_type_encoded": 2,
        "has_premium_services": 1,
        "service_adoption_rate": 1,
        "data_usage_level": 2,
        "phone_usage_level": 2,
        "streaming_services_count": 2,
        "support_calls_per_month": 1 / 72,
        "contract_type_risk": 1,
        "contract_length_months": 12,
        "has_device_protection": 1,
        "engagement_score": 1 - 1 / 216,  # (1 + 1 + 71/72) / 3
    },
}

COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}


def transform_one(transformer: ChurnFeatures, row: CustomerData) -> np.ndarray:
    return transformer.transform(encode_customers([row]))[0]


def test_hand_rows_cover_every_engineered_feature() -> None:
    for expected in EXPECTED.values():
        assert tuple(expected) == ENGINEERED_FEATURES


def test_learned_state(fitted: ChurnFeatures) -> None:
    assert fitted.reference_day_ == epoch_days(REFERENCE_DAY)
    np.testing.assert_allclose(fitted.data_usage_cuts_, [3.0, 6.0])
    np.testing.assert_allclose(fitted.phone_usage_cuts_, [300.0, 600.0])


@pytest.mark.parametrize("feature", ENGINEERED_FEATURES)
@pytest.mark.parametrize("row", list(HAND_ROWS))
def test_engineered_feature_on_hand_row(fitted: ChurnFeatures, row: str, feature: str) -> None:
    value = transform_one(fitted, HAND_ROWS[row])[COLUMN[feature]]
    assert value == pytest.approx(EXPECTED[row][feature], nan_ok=True)


def test_passthrough_columns(fitted: ChurnFeatures) -> None:
    out = transform_one(fitted, HAND_ROWS["new_fiber_heavy_caller"])
    expected = {
        "age": 25,
        "monthly_charges": 50,
        "total_charges": 100,
        "support_calls": 3,
        "senior_citizen": 0,
        "partner": 1,
        "dependents": 0,
        "gender": 1,  # Male
        "paperless_billing": 1,
        "online_security": 0,
        "online_backup": 1,
        "tech_support": 0,
        "streaming_tv": 1,
        "streaming_movies": 1,
        "phone_service": 1,
        "multiple_lines": 0,
        "data_usage_gb": 7,
        "phone_usage_minutes": 100,
    }
    assert tuple(expected) == PASSTHROUGH_FEATURES
    assert out[len(ENGINEERED_FEATURES) :].tolist() == list(expected.values())


@pytest.mark.parametrize(
    ("tenure", "is_new", "loyalty", "binned"),
    [
        (0, 1, 0, 0),
        (2, 1, 0, 0),
        (3, 0, 0, 0),
        (5, 0, 0, 0),
        (6, 0, 0, 1),
        (11, 0, 0, 1),
        (12, 0, 1, 2),
        (23, 0, 1, 2),
        (24, 0, 2, 3),
        (47, 0, 2, 3),
        (48, 0, 3, 4),
        (71, 0, 3, 4),
        (72, 0, 3, 5),
        (200, 0, 3, 5),
    ],
)
def test_tenure_boundaries(
    fitted: ChurnFeatures, tenure: int, is_new: int, loyalty: int, binned: int
) -> None:
    out = transform_one(fitted, customer(tenure_months=tenure))
    assert out[COLUMN["is_new_customer"]] == is_new
    assert out[COLUMN["loyalty_level"]] == loyalty
    assert out[COLUMN["tenure_months_binned"]] == binned


@pytest.mark.parametrize(
    ("method", "risk", "autopay"),
    [
        ("Electronic check", 1.0, 0),
        ("Mailed check", 0.6, 0),
        ("Bank transfer (automatic)", 0.2, 1),
        ("Credit card (automatic)", 0.1, 1),
    ],
)
def test_payment_method(fitted: ChurnFeatures, method: str, risk: float, autopay: int) -> None:
    out = transform_one(fitted, customer(payment_method=method))
    assert out[COLUMN["payment_method_risk_score"]] == risk
    assert out[COLUMN["has_autopay"]] == autopay


@pytest.mark.parametrize(
    ("contract", "risk", "months"),
    [("Month-to-month", 2, 1), ("One year", 1, 12), ("Two year", 0, 24)],
)
def test_contract(fitted: ChurnFeatures, contract: str, risk: int, months: int) -> None:
    out = transform_one(fitted, customer(contract=contract))
    assert out[COLUMN["contract_type_risk"]] == risk
    assert out[COLUMN["contract_length_months"]] == months


@pytest.mark.parametrize(("service", "code"), [("None", 0), ("DSL", 1), ("Fiber", 2)])
def test_internet_service_encoding(fitted: ChurnFeatures, service: str, code: int) -> None:
    out = transform_one(fitted, customer(internet_service=service))
    assert out[COLUMN["internet_service_type_encoded"]] == code
    assert out[COLUMN["total_services_count"]] == min(code, 1)


def raw_row(**values: float) -> np.ndarray:
    """One raw row, NaN except the given columns."""
    X = np.full((1, len(RAW_COLUMNS)), NAN)
    for name, value in values.items():
        X[0, RAW_INDEX[name]] = value
    return X


@pytest.mark.parametrize(
    ("missing", "nan_features"),
    [
        (
            "tenure_months",
            {
                "is_new_customer",
                "loyalty_level",
                "tenure_months_binned",
                "tenure_years",
                "days_since_signup",
                "customer_lifetime_value",
                "avg_monthly_spend",
                "support_calls_per_month",
            },
        ),
        (
            "monthly_charges",
            {"customer_lifetime_value", "monthly_to_total_ratio", "price_per_service"},
        ),
        ("total_charges", {"monthly_to_total_ratio", "avg_monthly_spend"}),
        ("support_calls", {"support_calls_per_month"}),
        ("payment_method", {"payment_method_risk_score", "has_autopay"}),
        ("contract", {"contract_type_risk", "contract_length_months"}),
        ("internet_service", {"internet_service_type_encoded"}),
        ("data_usage_gb", {"data_usage_level"}),
        ("phone_usage_minutes", {"phone_usage_level"}),
    ],
)
def test_nan_propagates_only_where_needed(
    fitted: ChurnFeatures, missing: str, nan_features: set[str]
) -> None:
    row = encode_customers([HAND_ROWS["new_fiber_heavy_caller"]])
    row[0, RAW_INDEX[missing]] = NAN
    if missing == "tenure_months":
        row[0, RAW_INDEX["signup_date"]] = NAN  # else days_since_signup needs no tenure
    out = fitted.transform(row)[0, : len(ENGINEERED_FEATURES)]
    got = {name for name, value in zip(ENGINEERED_FEATURES, out, strict=True) if np.isnan(value)}
    assert got == nan_features  # every other input of this row is present


def test_missing_service_flags_count_as_not_subscribed(fitted: ChurnFeatures) -> None:
    out = fitted.transform(raw_row(tenure_months=10.0, monthly_charges=30.0))[0]
    for name in (
        "total_services_count",
        "has_premium_services",
        "service_adoption_rate",
        "streaming_services_count",
        "has_device_protection",
    ):
        assert out[COLUMN[name]] == 0, name
    assert out[COLUMN["price_per_service"]] == 30.0
    # Support calls unknown: engagement averages the two known terms, (0 + 10/72) / 2.
    assert out[COLUMN["engagement_score"]] == pytest.approx(5 / 72)


def test_untrained_columns_give_nan_or_tenure_fallback() -> None:
    """Columns absent from training: usage levels NaN, signup age from tenure."""
    train = np.full((3, len(RAW_COLUMNS)), NAN)
    features = ChurnFeatures().fit(train)
    assert np.isnan(features.reference_day_)
    assert np.isnan(features.data_usage_cuts_).all()
    row = raw_row(tenure_months=2.0, signup_date=1000.0, data_usage_gb=5.0)
    out = features.transform(row)[0]
    assert np.isnan(out[COLUMN["data_usage_level"]])
    assert out[COLUMN["days_since_signup"]] == 60.875  # 2 × 30.4375


def random_customers(n: int, seed: int) -> list[CustomerData]:
    """Varied, realistic customers, including edge cases and missing optional fields."""
    rng = np.random.default_rng(seed)

    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.25 else value

    out = []
    for i in range(n):
        tenure = int(rng.choice([0, 1, 5, 12, 30, 72, 100, int(rng.integers(0, 90))]))
        monthly = float(rng.uniform(18, 120))
        out.append(
            CustomerData(
                customer_id=f"r{i}",
                age=int(rng.integers(18, 90)),
                tenure_months=tenure,
                monthly_charges=monthly,
                total_charges=float(rng.choice([0.0, monthly * tenure])),
                support_calls=int(rng.integers(0, 12)),
                internet_service=str(rng.choice(["DSL", "Fiber", "None"])),
                contract=str(rng.choice(["Month-to-month", "One year", "Two year"])),
                payment_method=str(
                    rng.choice(
                        [
                            "Electronic check",
                            "Mailed check",
                            "Bank transfer (automatic)",
                            "Credit card (automatic)",
                        ]
                    )
                ),
                signup_date=maybe(date.fromordinal(735000 + int(rng.integers(3000)))),
                late_payments=maybe(int(rng.integers(0, 5))),
                billing_issues=maybe(int(rng.integers(0, 3))),
                data_usage_gb=maybe(float(rng.exponential(20))),
                phone_usage_minutes=maybe(float(rng.exponential(300))),
                gender=maybe(str(rng.choice(["Female", "Male"]))),
                **{
                    name: maybe(bool(rng.random() < 0.5))
                    for name in (
                        "phone_service",
                        "multiple_lines",
                        "online_security",
                        "online_backup",
                        "device_protection",
                        "tech_support",
                        "streaming_tv",
                        "streaming_movies",
                        "paperless_billing",
                        "senior_citizen",
                        "partner",
                        "dependents",
                    )
                },
            )
        )
    return out


@pytest.fixture(scope="module")
def pipeline() -> tuple[CustomerCleaner, ChurnFeatures]:
    raw = encode_customers(random_customers(300, seed=0))
    cleaner = CustomerCleaner().fit(raw)
    return cleaner, ChurnFeatures().fit(cleaner.transform(raw))


@pytest.mark.parametrize("position", [0, 1, 7, 123, 499])
def test_row_alone_equals_row_in_batch(
    pipeline: tuple[CustomerCleaner, ChurnFeatures], position: int
) -> None:
    cleaner, features = pipeline
    batch = random_customers(500, seed=1)
    in_batch = features.transform(cleaner.transform(encode_customers(batch)))[position]
    alone = features.transform(cleaner.transform(encode_customers([batch[position]])))[0]
    np.testing.assert_array_equal(alone, in_batch)


def test_raw_rows_alone_equal_batch(fitted: ChurnFeatures) -> None:
    """Same invariance without cleaning, so NaN inputs are exercised too."""
    X = encode_customers(random_customers(200, seed=2))
    batch = fitted.transform(X)
    for i in range(len(X)):
        np.testing.assert_array_equal(fitted.transform(X[i : i + 1])[0], batch[i])


def test_output_shape_dtype_and_no_inf(pipeline: tuple[CustomerCleaner, ChurnFeatures]) -> None:
    cleaner, features = pipeline
    raw = encode_customers(random_customers(1000, seed=3))
    for X in (raw, cleaner.transform(raw)):
        out = features.transform(X)
        assert out.shape == (1000, len(FEATURE_NAMES))
        assert out.dtype == np.float64
        assert not np.isinf(out).any()
    n_engineered = len(ENGINEERED_FEATURES)
    assert not np.isnan(features.transform(cleaner.transform(raw))[:, :n_engineered]).any()


def test_feature_names(fitted: ChurnFeatures) -> None:
    names = fitted.get_feature_names_out()
    assert len(names) == 25 + len(PASSTHROUGH_FEATURES)
    assert tuple(names[:25]) == DESIGN_FEATURES
    assert tuple(names) == FEATURE_NAMES
    assert len(set(names)) == len(names)


def test_transform_before_fit_raises() -> None:
    with pytest.raises(NotFittedError):
        ChurnFeatures().transform(training_matrix())


def test_state_survives_json_round_trip(fitted: ChurnFeatures) -> None:
    state = {k: v for k, v in vars(fitted).items() if k.endswith("_")}
    payload = json.dumps(
        {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in state.items()}
    )
    restored = ChurnFeatures(**fitted.get_params())
    for name, value in json.loads(payload).items():
        setattr(restored, name, value)
    X = encode_customers(random_customers(50, seed=4))
    np.testing.assert_array_equal(restored.transform(X), fitted.transform(X))


def test_absurd_inputs_give_finite_float32_features(fitted: ChurnFeatures) -> None:
    """A charge of 1e17 over a total of 1e-38 must not become an infinity XGBoost refuses."""
    X = encode_customers(
        [customer(tenure_months=1063, monthly_charges=6.6e16, total_charges=1.2e-38)], ()
    )
    out = fitted.transform(X)
    assert np.isfinite(out.astype(np.float32)[~np.isnan(out)]).all()
