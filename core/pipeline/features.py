"""Feature engineering: the design's 25 engineered features plus cleaned raw passthroughs.

`ChurnFeatures` turns the CLEANED raw matrix (columns = `RAW_COLUMNS`, see
`core.pipeline.clean`) into the model matrix (columns = `FEATURE_NAMES`). Every feature is a
whole-column numpy expression, so one serving request and a 10,000-row training table go
through the same code and cannot drift apart. A missing input (NaN) makes the features
that need it NaN, which XGBoost routes natively; counts of services read a missing flag as
"not subscribed". Divisions are guarded, so the output never holds inf.

The little learned state (a reference day and two pairs of tertile cuts) is plain floats
and arrays, saved by the model store as JSON like the cleaner's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted, validate_data

from core.pipeline.clean import check_raw_matrix
from core.pipeline.encode import RAW_INDEX
from core.pipeline.extras import feature_name
from core.schema import CATEGORIES, RAW_COLUMNS

ENGINEERED_FEATURES: tuple[str, ...] = (
    # Tenure (5)
    "is_new_customer",
    "loyalty_level",
    "tenure_months_binned",
    "tenure_years",
    "days_since_signup",
    # Financial (8)
    "customer_lifetime_value",
    "monthly_to_total_ratio",
    "price_per_service",
    "avg_monthly_spend",
    "payment_method_risk_score",
    "has_autopay",
    "late_payment_count",
    "billing_issues_count",
    # Service (7)
    "total_services_count",
    "internet_service_type_encoded",
    "has_premium_services",
    "service_adoption_rate",
    "data_usage_level",
    "phone_usage_level",
    "streaming_services_count",
    # Behavioural (5)
    "support_calls_per_month",
    "contract_type_risk",
    "contract_length_months",
    "has_device_protection",
    "engagement_score",
)
"""The original design's 25 engineered features, in its order."""

PASSTHROUGH_FEATURES: tuple[str, ...] = (
    "age",
    "monthly_charges",
    "total_charges",
    "support_calls",
    "senior_citizen",
    "partner",
    "dependents",
    "gender",
    "paperless_billing",
    "online_security",
    "online_backup",
    "tech_support",
    "streaming_tv",
    "streaming_movies",
    "phone_service",
    "multiple_lines",
    "data_usage_gb",
    "phone_usage_minutes",
)
"""Cleaned raw inputs the model reads as they are (tenure, internet, contract and payment
enter through their engineered encodings instead)."""

FEATURE_NAMES: tuple[str, ...] = ENGINEERED_FEATURES + PASSTHROUGH_FEATURES
"""Columns of the model matrix, in order."""

PAYMENT_METHOD_RISK: dict[str, float] = {
    "Electronic check": 1.0,
    "Mailed check": 0.6,
    "Bank transfer (automatic)": 0.2,
    "Credit card (automatic)": 0.1,
}
"""Churn risk attached to each payment method (manual payment = more friction)."""
AUTOPAY_METHODS: frozenset[str] = frozenset(
    {"Bank transfer (automatic)", "Credit card (automatic)"}
)
INTERNET_SERVICE_CODE: dict[str, float] = {"None": 0.0, "DSL": 1.0, "Fiber": 2.0}
"""Ordinal by bandwidth, independent of the vocabulary order in the schema."""
CONTRACT_RISK: dict[str, float] = {"Month-to-month": 2.0, "One year": 1.0, "Two year": 0.0}
CONTRACT_LENGTH_MONTHS: dict[str, float] = {
    "Month-to-month": 1.0,
    "One year": 12.0,
    "Two year": 24.0,
}

SERVICE_FLAGS: tuple[str, ...] = (
    "phone_service",
    "multiple_lines",
    "online_security",
    "online_backup",
    "device_protection",
    "tech_support",
    "streaming_tv",
    "streaming_movies",
)
"""Boolean service columns; with internet access they make the 9 countable services."""
PREMIUM_FLAGS: tuple[str, ...] = (
    "online_security",
    "online_backup",
    "device_protection",
    "tech_support",
)
N_SERVICES = len(SERVICE_FLAGS) + 1

LOYALTY_EDGES = np.array([12.0, 24.0, 48.0])
"""New < 12 ≤ Regular < 24 ≤ Loyal < 48 ≤ Champion (months)."""
TENURE_BIN_EDGES = np.array([6.0, 12.0, 24.0, 48.0, 72.0])
NEW_CUSTOMER_MONTHS = 3.0
DAYS_PER_MONTH = 30.4375
"""Mean Gregorian month, to turn tenure into days when the signup date is missing."""
FULL_TENURE_MONTHS = 72.0
"""Tenure at which the engagement score's tenure term saturates."""


def _code_table(column: str, mapping: Mapping[str, float]) -> np.ndarray:
    """Map keyed by category string → array indexed by the column's category code.

    Built from `CATEGORIES`, so reordering the schema's vocabulary cannot silently
    permute the mapping; a vocabulary entry missing from the map fails at import.
    """
    return np.array([mapping[category] for category in CATEGORIES[column]], dtype=np.float64)


_PAYMENT_RISK_TABLE = _code_table("payment_method", PAYMENT_METHOD_RISK)
_AUTOPAY_TABLE = _code_table(
    "payment_method", {c: float(c in AUTOPAY_METHODS) for c in CATEGORIES["payment_method"]}
)
_INTERNET_TABLE = _code_table("internet_service", INTERNET_SERVICE_CODE)
_CONTRACT_RISK_TABLE = _code_table("contract", CONTRACT_RISK)
_CONTRACT_LENGTH_TABLE = _code_table("contract", CONTRACT_LENGTH_MONTHS)
_SERVICE_IDX = [RAW_INDEX[name] for name in SERVICE_FLAGS]
_PREMIUM_IDX = [RAW_INDEX[name] for name in PREMIUM_FLAGS]
_STREAMING_IDX = [RAW_INDEX["streaming_tv"], RAW_INDEX["streaming_movies"]]
_PASSTHROUGH_IDX = [RAW_INDEX[name] for name in PASSTHROUGH_FEATURES]


def _lookup(table: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Value of each category code in `table`; NaN for missing or unknown codes."""
    valid = (codes >= 0) & (codes < len(table))  # False for NaN
    return np.where(valid, table[np.where(valid, codes, 0).astype(np.intp)], np.nan)


def _bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Number of edges ≤ value (bin index for ascending edges); NaN value or edges → NaN."""
    index = (values[:, None] >= edges[None, :]).sum(axis=1).astype(np.float64)
    return np.where(np.isnan(values) | np.isnan(edges).any(), np.nan, index)


def _zero_if_missing(values: np.ndarray) -> np.ndarray:
    """Service flags for counting: a missing flag means "not subscribed"."""
    return np.where(np.isnan(values), 0.0, values)


def _flag(condition: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Boolean condition as 1.0/0.0, NaN where its input was missing."""
    return np.where(missing, np.nan, condition.astype(np.float64))


def _nanmean_rows(terms: np.ndarray) -> np.ndarray:
    """Row mean skipping NaN terms (NaN if all are), without numpy's empty-slice warning."""
    present = ~np.isnan(terms)
    count = present.sum(axis=1)
    total = np.where(present, terms, 0.0).sum(axis=1)
    return np.divide(total, count, out=np.full(len(terms), np.nan), where=count > 0)


def _tertile_cuts(values: np.ndarray) -> np.ndarray:
    """The 1/3 and 2/3 quantiles of the observed values; NaN cuts if none is observed."""
    observed = values[~np.isnan(values)]
    if observed.size == 0:
        return np.full(2, np.nan)
    return np.quantile(observed, [1 / 3, 2 / 3])


FLOAT32_LIMIT = float(np.finfo(np.float32).max) / 2
"""Largest magnitude a feature may take: finite once XGBoost casts it to float32."""


class ChurnFeatures(TransformerMixin, BaseEstimator):
    """Cleaned raw matrix → model matrix (`FEATURE_NAMES`), fully vectorised.

    fit learns `reference_day_` (latest training signup date, the "today" for
    `days_since_signup`, so the feature does not depend on when the model is served) and
    the tertile cuts for the usage levels.
    """

    def __init__(self, extra_names: Sequence[str] = ()) -> None:
        self.extra_names = extra_names

    def __sklearn_tags__(self) -> Tags:
        """Declare NaN support: missing inputs flow through to NaN features."""
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def fit(self, X: np.ndarray, y: object = None) -> ChurnFeatures:
        """Learn the reference day and usage tertiles from the cleaned training matrix."""
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan")
        expected = len(RAW_COLUMNS) + len(self.extra_names)
        if X.shape[1] != expected:
            raise ValueError(f"expected {expected} raw columns, got {X.shape[1]}")
        signup = X[:, RAW_INDEX["signup_date"]]
        observed = signup[~np.isnan(signup)]
        self.reference_day_ = float(observed.max()) if observed.size else float("nan")
        self.data_usage_cuts_ = _tertile_cuts(X[:, RAW_INDEX["data_usage_gb"]])
        self.phone_usage_cuts_ = _tertile_cuts(X[:, RAW_INDEX["phone_usage_minutes"]])
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Compute `FEATURE_NAMES` for every row; shape ``(n, len(FEATURE_NAMES))``."""
        check_is_fitted(self)
        X = check_raw_matrix(X, self.n_features_in_)
        features = {
            **self._tenure(X),
            **self._services(X),
        }
        features.update(self._financial(X, features["total_services_count"]))
        features.update(self._behaviour(X, features["service_adoption_rate"]))
        engineered = np.column_stack([features[name] for name in ENGINEERED_FEATURES])
        extras = X[:, len(RAW_COLUMNS) :]  # a data profile's extra columns, as cleaned
        out = np.hstack([engineered, X[:, _PASSTHROUGH_IDX], extras])
        # XGBoost works in float32 and refuses infinities: absurd inputs (a charge of 1e17,
        # a ratio over 1e-38) are clipped to its range instead of failing the whole batch.
        return np.clip(out, -FLOAT32_LIMIT, FLOAT32_LIMIT, out=out)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """`FEATURE_NAMES` (25 engineered, then passthroughs), then ``extra_<name>``s."""
        check_is_fitted(self)
        extras = [feature_name(name) for name in self.extra_names]
        return np.asarray([*FEATURE_NAMES, *extras], dtype=object)

    # Feature groups ---------------------------------------------------------------------

    def _tenure(self, X: np.ndarray) -> dict[str, np.ndarray]:
        tenure = X[:, RAW_INDEX["tenure_months"]]
        missing = np.isnan(tenure)
        signup = X[:, RAW_INDEX["signup_date"]]
        # No signup date (or none seen in training) → approximate from tenure.
        approximate = np.isnan(signup) | np.isnan(self.reference_day_)
        return {
            "is_new_customer": _flag(tenure < NEW_CUSTOMER_MONTHS, missing),
            "loyalty_level": _bin_index(tenure, LOYALTY_EDGES),
            "tenure_months_binned": _bin_index(tenure, TENURE_BIN_EDGES),
            "tenure_years": tenure / 12.0,
            "days_since_signup": np.where(
                approximate, tenure * DAYS_PER_MONTH, self.reference_day_ - signup
            ),
        }

    def _services(self, X: np.ndarray) -> dict[str, np.ndarray]:
        internet = X[:, RAW_INDEX["internet_service"]]
        internet_type = _lookup(_INTERNET_TABLE, internet)
        has_internet = internet_type > 0  # NaN compares False: missing → not counted
        flags = _zero_if_missing(X[:, _SERVICE_IDX])  # missing flag → not subscribed
        total = flags.sum(axis=1) + has_internet
        cuts_data = np.asarray(self.data_usage_cuts_, dtype=np.float64)
        cuts_phone = np.asarray(self.phone_usage_cuts_, dtype=np.float64)
        return {
            "total_services_count": total,
            "internet_service_type_encoded": internet_type,
            "has_premium_services": (X[:, _PREMIUM_IDX] > 0).any(axis=1).astype(np.float64),
            "service_adoption_rate": total / N_SERVICES,
            "data_usage_level": _bin_index(X[:, RAW_INDEX["data_usage_gb"]], cuts_data),
            "phone_usage_level": _bin_index(X[:, RAW_INDEX["phone_usage_minutes"]], cuts_phone),
            "streaming_services_count": _zero_if_missing(X[:, _STREAMING_IDX]).sum(axis=1),
        }

    def _financial(self, X: np.ndarray, services: np.ndarray) -> dict[str, np.ndarray]:
        monthly = X[:, RAW_INDEX["monthly_charges"]]
        total = X[:, RAW_INDEX["total_charges"]]
        tenure = X[:, RAW_INDEX["tenure_months"]]
        payment = X[:, RAW_INDEX["payment_method"]]
        # A customer with nothing billed yet pays the whole total monthly: ratio 1.
        ratio = np.where(np.isnan(monthly), np.nan, 1.0)
        np.divide(monthly, total, out=ratio, where=total != 0)
        return {
            "customer_lifetime_value": monthly * tenure,
            "monthly_to_total_ratio": ratio,
            "price_per_service": monthly / np.maximum(services, 1.0),
            "avg_monthly_spend": total / np.maximum(tenure, 1.0),
            "payment_method_risk_score": _lookup(_PAYMENT_RISK_TABLE, payment),
            "has_autopay": _lookup(_AUTOPAY_TABLE, payment),
            "late_payment_count": X[:, RAW_INDEX["late_payments"]],
            "billing_issues_count": X[:, RAW_INDEX["billing_issues"]],
        }

    def _behaviour(self, X: np.ndarray, adoption: np.ndarray) -> dict[str, np.ndarray]:
        tenure = X[:, RAW_INDEX["tenure_months"]]
        calls_per_month = X[:, RAW_INDEX["support_calls"]] / np.maximum(tenure, 1.0)
        contract = X[:, RAW_INDEX["contract"]]
        engagement_terms = np.column_stack(
            [
                adoption,
                np.minimum(tenure / FULL_TENURE_MONTHS, 1.0),
                1.0 - np.minimum(calls_per_month, 1.0),
            ]
        )
        return {
            "support_calls_per_month": calls_per_month,
            "contract_type_risk": _lookup(_CONTRACT_RISK_TABLE, contract),
            "contract_length_months": _lookup(_CONTRACT_LENGTH_TABLE, contract),
            "has_device_protection": _zero_if_missing(X[:, RAW_INDEX["device_protection"]]),
            "engagement_score": _nanmean_rows(engagement_terms),
        }
