"""Which prediction a label judges: the join of `ground_truth` with `predictions`.

Rule: a label (customer, churned, observed_date) judges the customer's latest prediction
served on or before its observed date and at most `horizon` days before it, whatever model
version served it; by hashed id. A date has no time of day, so "on or before" means before
the midnight (UTC) that ends the observed date: labels sent the day the traffic was served
judge it. A label with no such prediction judges nothing and is not counted.

Vectorised with `pandas.merge_asof` (one sort of each table), the same on SQLite and
PostgreSQL: the database only filters by time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
from sqlalchemy import Engine, select

from monitoring.database import GROUND_TRUTH, PREDICTIONS

PREDICTION_COLUMNS = (
    "id",
    "customer_hash",
    "model_version",
    "churn_probability",
    "will_churn",
    "created_at",
)
LABEL_COLUMNS = ("customer_hash", "churned", "observed_date")
_ONE_DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class WindowData:
    """The rows a window's figures are computed from."""

    predictions: pd.DataFrame
    """Predictions served in the window, sorted by time (`PREDICTION_COLUMNS`)."""
    joined: pd.DataFrame
    """One row per label whose judged prediction was served in the window: the label's
    columns beside the prediction's (`PREDICTION_COLUMNS` + `churned`, `observed_date`)."""


def _frame(rows: list[tuple[object, ...]], columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows, columns=list(columns))


def read_predictions(engine: Engine, start: datetime, end: datetime | None) -> pd.DataFrame:
    """Predictions served from `start` (until `end`, exclusive), oldest first; no features."""
    columns = [PREDICTIONS.c[name] for name in PREDICTION_COLUMNS]
    query = select(*columns).where(PREDICTIONS.c.created_at >= start)
    if end is not None:
        query = query.where(PREDICTIONS.c.created_at < end)
    with engine.connect() as connection:
        frame = _frame(list(connection.execute(query).tuples()), PREDICTION_COLUMNS)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    frame["churn_probability"] = frame["churn_probability"].astype("float64")
    frame["will_churn"] = frame["will_churn"].astype(bool)
    return frame.sort_values(["created_at", "id"], kind="mergesort", ignore_index=True)


def read_labels(engine: Engine, first: datetime, last: datetime) -> pd.DataFrame:
    """Labels observed on the dates `first` … `last` (inclusive)."""
    columns = [GROUND_TRUTH.c[name] for name in LABEL_COLUMNS]
    query = select(*columns).where(
        GROUND_TRUTH.c.observed_date >= first.date(),
        GROUND_TRUTH.c.observed_date <= last.date(),
    )
    with engine.connect() as connection:
        frame = _frame(list(connection.execute(query).tuples()), LABEL_COLUMNS)
    frame["churned"] = frame["churned"].astype(bool)
    return frame


def join_labels(predictions: pd.DataFrame, labels: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
    """Each label beside the prediction it judges (module rule); unmatched labels dropped.

    `predictions` need not be sorted. Ties (two predictions at the same instant) go to the
    later `id` in sort order, so the choice is deterministic.
    """
    if labels.empty or predictions.empty:
        return pd.DataFrame(columns=[*PREDICTION_COLUMNS, "churned", "observed_date"])
    left = labels.assign(
        judged_before=pd.to_datetime(labels["observed_date"]).dt.tz_localize("UTC") + _ONE_DAY
    ).sort_values("judged_before", kind="mergesort")
    right = predictions.assign(created_at=pd.to_datetime(predictions["created_at"], utc=True))
    right = right.sort_values(["created_at", "id"], kind="mergesort")
    # The asof key of the right side must keep its name: `created_at` is the matched time.
    right = right.assign(judged_before=right["created_at"])
    joined = pd.merge_asof(
        left,
        right,
        on="judged_before",
        by="customer_hash",
        direction="backward",
        allow_exact_matches=False,  # strictly before the midnight ending the observed date
        tolerance=pd.Timedelta(days=horizon_days) + _ONE_DAY,  # not before (date − horizon)
    )
    joined = joined.dropna(subset=["model_version"]).drop(columns="judged_before")
    joined["will_churn"] = joined["will_churn"].astype(bool)
    return joined.reset_index(drop=True)


def read_window(engine: Engine, start: datetime, end: datetime, horizon_days: int) -> WindowData:
    """The window's predictions and its labels joined to them.

    A label judges a prediction in the window only if it was observed from the window's
    first date up to `horizon` days after its end, so only those labels are read; the
    predictions served after the window are read too, since a label's latest prediction
    may be one of them (and then the label does not judge this window). Times are
    timezone-aware.
    """
    last_label = end + timedelta(days=horizon_days)
    served_since = read_predictions(engine, start, last_label + timedelta(days=1))
    labels = read_labels(engine, start, last_label)
    joined = join_labels(served_since, labels, horizon_days)
    in_window = served_since["created_at"] < pd.Timestamp(end)
    joined = joined[joined["created_at"] < pd.Timestamp(end)].reset_index(drop=True)
    return WindowData(served_since[in_window].reset_index(drop=True), joined)
