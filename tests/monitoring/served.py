"""Served predictions and labels written the way the product writes them (record rows
through `insert_rows`, labels through `store_labels`), for the performance tests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine

from monitoring.feedback import Label, store_labels
from monitoring.identity import customer_hash
from monitoring.records import PredictionRecord, insert_rows, record_row
from tests.monitoring.conftest import SECRET

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
"""The runs' `now`: fixed, so windows and horizons are exact."""


@dataclass(frozen=True)
class Served:
    """One prediction to log."""

    customer_id: str
    probability: float
    will_churn: bool
    at: datetime
    version: str = "v1"


def days_ago(days: float, at: datetime = NOW) -> datetime:
    return at - timedelta(days=days)


def serve(engine: Engine, predictions: Iterable[Served]) -> None:
    """Log predictions (hashed ids, as the service logs them)."""
    rows = [
        record_row(
            PredictionRecord(
                request_id="req",
                customer_hash=customer_hash(item.customer_id, SECRET),
                model_version=item.version,
                features={},
                churn_probability=float(item.probability),
                will_churn=bool(item.will_churn),
                risk_level="high" if item.will_churn else "low",
                latency_ms=1.0,
                cache="none",
                endpoint="batch",
                created_at=item.at,
            )
        )
        for item in predictions
    ]
    with engine.begin() as connection:
        for start in range(0, len(rows), 1000):
            insert_rows(connection, rows[start : start + 1000])


def label(engine: Engine, labels: Iterable[tuple[str, bool, date]]) -> None:
    """Store labels (customer id, churned, observed date) as `/feedback` does."""
    items = [Label(customer_id=c, churned=bool(y), observed_date=d) for c, y, d in labels]
    store_labels(engine, items, SECRET)
