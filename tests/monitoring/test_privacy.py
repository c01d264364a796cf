"""Right to deletion and retention remove exactly what they should."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import Engine, select

from monitoring.database import GROUND_TRUTH, PREDICTIONS
from monitoring.feedback import Label, store_labels
from monitoring.identity import customer_hash
from monitoring.prediction_log import PredictionLog, PredictionRecord
from monitoring.privacy import delete_customer, delete_predictions_older_than

Make = Callable[..., PredictionRecord]
Count = Callable[..., int]


def log_now(engine: Engine, tmp_path: Path, records: list[PredictionRecord]) -> None:
    with PredictionLog(engine, tmp_path / "spool", flush_ms=5) as log:
        log.log(records)
        assert log.flush(10)


def test_delete_customer_removes_only_that_customer(
    engine: Engine, tmp_path: Path, make_record: Make, secret: bytes, count: Count
) -> None:
    log_now(engine, tmp_path, [make_record(c) for c in ("A", "A", "B", "C")])
    day = date(2025, 3, 31)
    store_labels(
        engine, [Label(customer_id=c, churned=True, observed_date=day) for c in "AB"], secret
    )
    assert delete_customer(engine, customer_hash("A", secret)) == {
        "predictions": 2,
        "ground_truth": 1,
    }
    with engine.connect() as connection:
        left = set(connection.execute(select(PREDICTIONS.c.customer_hash)).scalars())
        labelled = set(connection.execute(select(GROUND_TRUTH.c.customer_hash)).scalars())
    assert left == {customer_hash("B", secret), customer_hash("C", secret)}
    assert labelled == {customer_hash("B", secret)}
    assert delete_customer(engine, customer_hash("A", secret)) == {
        "predictions": 0,
        "ground_truth": 0,
    }


def test_retention_removes_only_old_predictions(
    engine: Engine, tmp_path: Path, make_record: Make, count: Count
) -> None:
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    ages = [0, 10, 89, 91, 200]
    elsewhere = timezone(timedelta(hours=-5))  # any offset: stored and compared in UTC
    records = [
        make_record(
            f"C{age}",
            request_id=f"age-{age}",
            created_at=(now - timedelta(days=age, minutes=-1)).astimezone(elsewhere),
        )
        for age in ages
    ]
    log_now(engine, tmp_path, records)
    assert delete_predictions_older_than(engine, 90, now=now) == 2
    with engine.connect() as connection:
        kept = set(connection.execute(select(PREDICTIONS.c.request_id)).scalars())
    assert kept == {"age-0", "age-10", "age-89"}
    assert delete_predictions_older_than(engine, 90, now=now) == 0
