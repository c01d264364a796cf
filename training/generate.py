"""Synthetic telecom customers whose churn comes from a known logistic model.

Real churn tables never tell you how good a model *could* be. Here every customer's churn
probability is computed from the named effects below (the ground truth), then the label is
drawn from it, so training can be judged against the Bayes-optimal score
(`bayes_optimal_auc`) and model tests can check directions against the truth.

Everything is vectorised numpy and driven by one `np.random.default_rng(seed)`, so a seed
always gives the same table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from sklearn.metrics import roc_auc_score

from core.schema import CATEGORIES, ID_COLUMN
from core.settings import TARGET_COLUMN, TRUE_PROBABILITY_COLUMN
from core.tables import accepted_suffixes, table_kind

SNAPSHOT_DATE: Final = np.datetime64("2026-01", "M")
"""The day the table was taken (2026-01-01); signup_date = snapshot − tenure months."""

MAX_TENURE_MONTHS: Final = 72

# --- Population: shares and service take-up ---------------------------------------------
INTERNET_SHARES: Final[Mapping[str, float]] = {"DSL": 0.34, "Fiber": 0.44, "None": 0.22}
PAYMENT_SHARES: Final[Mapping[str, float]] = {
    "Electronic check": 0.34,
    "Mailed check": 0.23,
    "Bank transfer (automatic)": 0.22,
    "Credit card (automatic)": 0.21,
}
CONTRACT_SHARES: Final[Mapping[str, float]] = {
    "Month-to-month": 0.70,
    "One year": 0.18,
    "Two year": 0.12,
}
CONTRACT_TENURE_TILT: Final[Mapping[str, float]] = {
    "Month-to-month": 0.0,
    "One year": 0.8,
    "Two year": 1.8,
}
"""Log-odds added per full 72 months of tenure: loyal customers sign longer contracts."""
ADDON_RATES: Final[Mapping[str, float]] = {
    "online_security": 0.37,
    "online_backup": 0.44,
    "device_protection": 0.44,
    "tech_support": 0.37,
    "streaming_tv": 0.49,
    "streaming_movies": 0.50,
}
"""Take-up among internet customers (tenure shifts it by ±0.1)."""

# --- Prices (monthly, USD) ---------------------------------------------------------------
PHONE_PRICE: Final = 20.0
MULTIPLE_LINES_PRICE: Final = 5.0
INTERNET_PRICE: Final[Mapping[str, float]] = {"DSL": 25.0, "Fiber": 50.0, "None": 0.0}
ADDON_PRICE: Final = 5.0
STREAMING_PRICE: Final = 10.0

# --- Ground truth: log-odds effects on churn -------------------------------------------
INTERCEPT: Final = -2.52
"""Calibrated with `calibrate_intercept(0.10)` so about 10 % of customers churn."""
CONTRACT_EFFECTS: Final[Mapping[str, float]] = {
    "Month-to-month": 0.9,
    "One year": -0.3,
    "Two year": -1.4,
}
INTERNET_EFFECTS: Final[Mapping[str, float]] = {"DSL": 0.0, "Fiber": 0.5, "None": -0.4}
PAYMENT_EFFECTS: Final[Mapping[str, float]] = {
    "Electronic check": 0.45,
    "Mailed check": 0.1,
    "Bank transfer (automatic)": -0.1,
    "Credit card (automatic)": -0.1,
}
TENURE_EFFECT: Final = -1.8
TENURE_SCALE_MONTHS: Final = 15.0
"""Tenure lowers churn by TENURE_EFFECT·(1 − exp(−tenure/scale)): steep early, then flat."""
SUPPORT_CALL_EFFECT: Final = 0.2
MANY_SUPPORT_CALLS: Final = 4
MANY_SUPPORT_CALLS_EFFECT: Final = 0.6
"""Extra jump once a customer has called MANY_SUPPORT_CALLS times or more."""
LATE_PAYMENT_EFFECT: Final = 0.3
BILLING_ISSUE_EFFECT: Final = 0.35
SENIOR_EFFECT: Final = 0.35
PAPERLESS_EFFECT: Final = 0.3
PARTNER_EFFECT: Final = -0.25
DEPENDENTS_EFFECT: Final = -0.3
TECH_SUPPORT_EFFECT: Final = -0.4
ONLINE_SECURITY_EFFECT: Final = -0.35
FIBER_WITHOUT_TECH_SUPPORT_EFFECT: Final = 0.45
"""Interaction: fiber customers left alone with problems churn more."""

MISSING_RATES: Final[Mapping[str, float]] = {
    "signup_date": 0.02,
    "late_payments": 0.03,
    "billing_issues": 0.03,
    "tech_support": 0.02,
    "paperless_billing": 0.02,
    "data_usage_gb": 0.04,
    "phone_usage_minutes": 0.04,
    "gender": 0.05,
    "dependents": 0.02,
}
"""Optional columns blanked at random after churn is drawn, so the cleaner has work."""


def _choose(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """One category index per row from per-row logits (Gumbel-max trick)."""
    return np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)


def _log_shares(shares: Mapping[str, float], options: Sequence[str], rows: int) -> np.ndarray:
    return np.tile(np.log([shares[o] for o in options]), (rows, 1))


def _lookup(effects: Mapping[str, float], values: pd.Series) -> np.ndarray:
    """Map a category column to its effect (vectorised; unknown values raise)."""
    return values.map(dict(effects)).to_numpy(dtype=np.float64)


SHIFT_BOUNDS: Final[Mapping[str, tuple[float, float]]] = {
    "age": (18, 100),
    "tenure_months": (0, 1200),
    "monthly_charges": (10, np.inf),
    "support_calls": (0, 100_000),
    "late_payments": (0, 100_000),
    "billing_issues": (0, 100_000),
    "data_usage_gb": (0, np.inf),
    "phone_usage_minutes": (0, np.inf),
}
"""Columns `shift` can move, and the schema's bounds the shifted values are clipped to."""


def _complete_customers(
    rng: np.random.Generator, rows: int, shift: Mapping[str, float] | None = None
) -> pd.DataFrame:
    """Every CustomerData column, fully populated and mutually consistent."""
    age = np.clip(np.rint(rng.normal(46, 16, rows)), 18, 100).astype(np.int64)
    tenure = np.rint(MAX_TENURE_MONTHS * rng.beta(0.7, 0.8, rows)).astype(np.int64)
    loyalty = tenure / MAX_TENURE_MONTHS

    internet_options = CATEGORIES["internet_service"]
    internet = np.asarray(internet_options)[
        _choose(rng, _log_shares(INTERNET_SHARES, internet_options, rows))
    ]
    contract_options = CATEGORIES["contract"]
    tilt = np.outer(loyalty, [CONTRACT_TENURE_TILT[c] for c in contract_options])
    contract = np.asarray(contract_options)[
        _choose(rng, _log_shares(CONTRACT_SHARES, contract_options, rows) + tilt)
    ]
    payment_options = CATEGORIES["payment_method"]
    payment = np.asarray(payment_options)[
        _choose(rng, _log_shares(PAYMENT_SHARES, payment_options, rows))
    ]

    has_internet = internet != "None"
    # Everyone buys something: customers without internet always have a phone line.
    phone = (rng.random(rows) < 0.9) | ~has_internet
    multiple_lines = phone & (rng.random(rows) < 0.47)
    addons = {
        name: has_internet & (rng.random(rows) < rate + 0.2 * (loyalty - 0.5))
        for name, rate in ADDON_RATES.items()
    }
    paperless = rng.random(rows) < 0.59
    partner = rng.random(rows) < 0.48
    dependents = rng.random(rows) < np.where(partner, 0.5, 0.12)

    n_addons = sum(
        addons[a].astype(int)
        for a in ("online_security", "online_backup", "device_protection", "tech_support")
    )
    n_streams = addons["streaming_tv"].astype(int) + addons["streaming_movies"].astype(int)
    monthly = (
        PHONE_PRICE * phone
        + MULTIPLE_LINES_PRICE * multiple_lines
        + _lookup(INTERNET_PRICE, pd.Series(internet))
        + ADDON_PRICE * n_addons
        + STREAMING_PRICE * n_streams
        + rng.normal(0, 2, rows)
    )
    monthly = np.round(np.clip(monthly, 10, None), 2)
    charge_noise = rng.normal(1, 0.04, rows)
    total = np.round(np.clip(monthly * tenure * charge_noise, 0, None), 2)

    fiber_alone = (internet == "Fiber") & ~addons["tech_support"]
    billing_issues = rng.poisson(0.3, rows)
    support_calls = rng.poisson(1.2 + 0.6 * fiber_alone + 0.5 * billing_issues)
    late_payments = rng.poisson(0.3 + 0.4 * (payment == "Electronic check"))

    data_scale = np.where(internet == "Fiber", 35.0, 15.0)
    data_gb = np.where(has_internet, rng.gamma(2, data_scale) + 20.0 * n_streams, 0.0)
    minutes = np.where(phone, rng.gamma(2, 150.0, rows) * (1 + 0.6 * multiple_lines), 0.0)
    signup = (SNAPSHOT_DATE - tenure.astype("timedelta64[M]")).astype("datetime64[s]")

    frame = pd.DataFrame(
        {
            ID_COLUMN: pd.Series(np.char.mod("CUST%07d", np.arange(1, rows + 1)), dtype="str"),
            "age": age,
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "support_calls": support_calls,
            "internet_service": pd.Series(internet, dtype="str"),
            "contract": pd.Series(contract, dtype="str"),
            "payment_method": pd.Series(payment, dtype="str"),
            "signup_date": signup,
            "late_payments": late_payments,
            "billing_issues": billing_issues,
            "phone_service": phone,
            "multiple_lines": multiple_lines,
            **addons,
            "paperless_billing": paperless,
            "data_usage_gb": np.round(data_gb, 1),
            "phone_usage_minutes": np.round(minutes, 1),
            "gender": pd.Series(np.where(rng.random(rows) < 0.5, "Female", "Male"), dtype="str"),
            "senior_citizen": age >= 65,
            "partner": partner,
            "dependents": dependents,
        }
    )
    return _shifted(frame, shift, charge_noise) if shift else frame


def _shifted(
    frame: pd.DataFrame, shift: Mapping[str, float], charge_noise: np.ndarray
) -> pd.DataFrame:
    """Move each named column by its amount × its own standard deviation (a drifted
    population), clipped to the schema's bounds, integers kept integral.

    The columns defined from a shifted one follow it (total_charges from tenure and monthly
    charges, signup_date from tenure, senior_citizen from age); columns merely correlated
    with it in the population (contract and add-ons with tenure) keep their distribution,
    so a shift drifts one input and what is computed from it, nothing else. No random
    draw is added: the same seed gives the same customers, shifted."""
    unknown = set(shift) - set(SHIFT_BOUNDS)
    if unknown:
        raise ValueError(f"cannot shift {sorted(unknown)}: choose from {sorted(SHIFT_BOUNDS)}")
    out = frame.copy()
    for name, amount in shift.items():
        column = out[name].to_numpy(dtype=np.float64)
        low, high = SHIFT_BOUNDS[name]
        moved = np.clip(column + amount * column.std(), low, high)
        integral = pd.api.types.is_integer_dtype(out[name])
        out[name] = np.rint(moved).astype(np.int64) if integral else np.round(moved, 2)
    tenure = out["tenure_months"].to_numpy()
    if {"tenure_months", "monthly_charges"} & set(shift):
        total = out["monthly_charges"].to_numpy() * tenure * charge_noise
        out["total_charges"] = np.round(np.clip(total, 0, None), 2)
    if "tenure_months" in shift:
        months = tenure.astype("timedelta64[M]")
        out["signup_date"] = (SNAPSHOT_DATE - months).astype("datetime64[s]")
    if "age" in shift:
        out["senior_citizen"] = out["age"].to_numpy() >= 65
    return out


def churn_log_odds(customers: pd.DataFrame, intercept: float = INTERCEPT) -> np.ndarray:
    """The ground-truth churn log-odds of complete customers (no missing values)."""
    tenure = customers["tenure_months"].to_numpy(dtype=np.float64)
    calls = customers["support_calls"].to_numpy(dtype=np.float64)
    tech = customers["tech_support"].to_numpy(dtype=np.float64)
    fiber = (customers["internet_service"] == "Fiber").to_numpy(dtype=np.float64)

    def flag(name: str) -> np.ndarray:
        return customers[name].to_numpy(dtype=np.float64)

    return (
        intercept
        + _lookup(CONTRACT_EFFECTS, customers["contract"])
        + _lookup(INTERNET_EFFECTS, customers["internet_service"])
        + _lookup(PAYMENT_EFFECTS, customers["payment_method"])
        + TENURE_EFFECT * (1 - np.exp(-tenure / TENURE_SCALE_MONTHS))
        + SUPPORT_CALL_EFFECT * calls
        + MANY_SUPPORT_CALLS_EFFECT * (calls >= MANY_SUPPORT_CALLS)
        + LATE_PAYMENT_EFFECT * flag("late_payments")
        + BILLING_ISSUE_EFFECT * flag("billing_issues")
        + SENIOR_EFFECT * flag("senior_citizen")
        + PAPERLESS_EFFECT * flag("paperless_billing")
        + PARTNER_EFFECT * flag("partner")
        + DEPENDENTS_EFFECT * flag("dependents")
        + TECH_SUPPORT_EFFECT * tech
        + ONLINE_SECURITY_EFFECT * flag("online_security")
        + FIBER_WITHOUT_TECH_SUPPORT_EFFECT * fiber * (1 - tech)
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def calibrate_intercept(churn_rate: float = 0.10, rows: int = 200_000, seed: int = 0) -> float:
    """The intercept whose mean churn probability on a large sample equals `churn_rate`.

    Used once to set INTERCEPT; kept so the constant can be re-derived after effects change.
    """
    offset = churn_log_odds(_complete_customers(np.random.default_rng(seed), rows), 0.0)
    return float(brentq(lambda b: _sigmoid(b + offset).mean() - churn_rate, -20.0, 20.0))


def _blank_optional_values(rng: np.random.Generator, frame: pd.DataFrame) -> pd.DataFrame:
    """Blank MISSING_RATES of a few optional columns, using nullable dtypes."""
    out = frame.copy()
    for name, rate in MISSING_RATES.items():
        mask = rng.random(len(out)) < rate
        column = out[name]
        if column.dtype == bool:
            column = column.astype("boolean")
        elif pd.api.types.is_integer_dtype(column):
            column = column.astype("Int64")
        out[name] = column.mask(mask)
    return out


def generate_customers(
    rows: int, seed: int, shift: Mapping[str, float] | None = None
) -> pd.DataFrame:
    """`rows` synthetic customers with every schema column, `churned` and the truth.

    `true_churn_probability` is the probability the label was drawn from; a few optional
    columns have 2–5 % missing values (drawn after the label, so missingness is random).
    `shift` (e.g. ``{"tenure_months": 1.5}``) moves columns by that many of their standard
    deviations before churn is drawn: a drifted week for monitoring (see `_shifted`).
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    rng = np.random.default_rng(seed)
    customers = _complete_customers(rng, rows, shift)
    probability = _sigmoid(churn_log_odds(customers))
    churned = rng.random(rows) < probability
    frame = _blank_optional_values(rng, customers)
    frame[TARGET_COLUMN] = churned
    frame[TRUE_PROBABILITY_COLUMN] = probability
    return frame


def bayes_optimal_auc(frame: pd.DataFrame) -> float:
    """ROC-AUC of the true churn probability: the ceiling any model can reach on `frame`."""
    return float(roc_auc_score(frame[TARGET_COLUMN].astype(int), frame[TRUE_PROBABILITY_COLUMN]))


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write `frame` as CSV (gzipped for ``.csv.gz``) or Parquet, by the file's ending:
    any ending the table readers accept, creating parent folders."""
    target = Path(path)
    kind = table_kind(target)
    if kind is None:
        raise ValueError(f"cannot write {target}: use a {accepted_suffixes()} suffix")
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "csv":
        frame.to_csv(target, index=False)  # compression inferred from ".gz"
    else:
        frame.to_parquet(target, index=False)
    return target
