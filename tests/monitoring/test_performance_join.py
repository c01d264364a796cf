"""Which prediction a label judges, on SQLite and a real PostgreSQL: the customer's latest
prediction on or before the observed date, within the horizon, by hashed id; and which
labels a window counts."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pandas as pd
from sqlalchemy import Engine

from monitoring.identity import customer_hash
from monitoring.label_join import read_window
from tests.monitoring.conftest import SECRET
from tests.monitoring.served import NOW, Served, days_ago, label, serve

OBSERVED = date(2026, 11, 20)
MIDNIGHT = datetime(2026, 11, 20, tzinfo=NOW.tzinfo)
"""The start of the observed date."""


def joined(engine: Engine, horizon_days: int = 90, window_days: float = 200) -> pd.DataFrame:
    data = read_window(engine, NOW - timedelta(days=window_days), NOW, horizon_days)
    return data.joined.set_index("customer_hash")


def hashed(customer_id: str) -> str:
    return customer_hash(customer_id, SECRET)


def test_a_label_judges_the_latest_prediction_on_or_before_its_date(engine: Engine) -> None:
    serve(
        engine,
        [
            Served("A", 0.2, False, MIDNIGHT - timedelta(days=10), "v1"),
            Served("A", 0.7, True, MIDNIGHT - timedelta(days=3), "v2"),
            Served("A", 0.9, True, MIDNIGHT + timedelta(days=1), "v2"),  # after the date
            Served("B", 0.3, False, MIDNIGHT - timedelta(days=2)),
            Served("B", 0.6, True, MIDNIGHT + timedelta(hours=23, minutes=59)),  # that day
        ],
    )
    label(engine, [("A", True, OBSERVED), ("B", False, OBSERVED)])
    rows = joined(engine)
    assert rows.loc[hashed("A"), "churn_probability"] == 0.7
    assert rows.loc[hashed("A"), "model_version"] == "v2"  # whichever version served it
    assert bool(rows.loc[hashed("A"), "churned"]) is True
    assert rows.loc[hashed("B"), "churn_probability"] == 0.6
    assert len(rows) == 2


def test_the_horizon_bounds_how_old_the_judged_prediction_may_be(engine: Engine) -> None:
    serve(
        engine,
        [
            Served("edge", 0.4, False, MIDNIGHT - timedelta(days=90)),  # first moment in
            Served("old", 0.5, True, MIDNIGHT - timedelta(days=90, seconds=1)),
            Served("recent", 0.1, False, MIDNIGHT - timedelta(days=30)),
        ],
    )
    label(engine, [(c, True, OBSERVED) for c in ("edge", "old", "recent")])
    assert set(joined(engine, horizon_days=90).index) == {hashed("edge"), hashed("recent")}
    assert set(joined(engine, horizon_days=30).index) == {hashed("recent")}


def test_only_the_customers_own_predictions_are_judged(engine: Engine) -> None:
    serve(engine, [Served("C", 0.8, True, MIDNIGHT - timedelta(days=1))])
    label(engine, [("D", True, OBSERVED), ("C", False, OBSERVED)])
    rows = joined(engine)
    assert list(rows.index) == [hashed("C")]
    assert bool(rows.loc[hashed("C"), "churned"]) is False


def test_a_window_counts_the_labels_of_its_own_predictions(engine: Engine) -> None:
    window_start = days_ago(30)
    serve(
        engine,
        [
            Served("before", 0.3, False, window_start - timedelta(days=1)),
            Served("inside", 0.6, True, days_ago(20)),
            Served("moved_on", 0.2, False, days_ago(20)),
            Served("moved_on", 0.9, True, NOW + timedelta(hours=1)),  # after the window
        ],
    )
    label(
        engine,
        [
            ("before", True, window_start.date()),
            ("inside", True, days_ago(10).date()),
            ("moved_on", True, (NOW + timedelta(days=5)).date()),
        ],
    )
    data = read_window(engine, window_start, NOW, 90)
    # "moved_on"'s label judges the later prediction, outside the window: not counted.
    assert list(data.joined["customer_hash"]) == [hashed("inside")]
    assert sorted(data.predictions["customer_hash"]) == sorted(
        [hashed("inside"), hashed("moved_on")]
    )
    assert data.predictions["created_at"].dt.tz is not None
