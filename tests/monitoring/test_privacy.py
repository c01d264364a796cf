"""Right to deletion and retention remove exactly what they should."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import Engine, select

from monitoring.database import DELETED_CUSTOMERS, GROUND_TRUTH, PREDICTIONS
from monitoring.feedback import (
    LABELS_SPOOL_PREFIX,
    Label,
    label_rows,
    store_labels,
    upsert_ground_truth,
)
from monitoring.identity import customer_hash
from monitoring.prediction_log import PredictionLog, PredictionRecord
from monitoring.privacy import delete_customer, delete_predictions_older_than
from monitoring.records import insert_rows, record_row
from monitoring.spool import Spool

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


def hashes_in(engine: Engine, table: object = PREDICTIONS) -> list[str]:
    with engine.connect() as connection:
        return sorted(connection.execute(select(table.c.customer_hash)).scalars())  # type: ignore[attr-defined]


def test_rows_created_before_a_deletion_are_dropped_however_late_they_arrive(
    engine: Engine, tmp_path: Path, make_record: Make, secret: bytes
) -> None:
    """Rows another worker still held in memory (the queue path) reach the database after
    the deletion: those created before it go, a returning customer is logged again."""
    before = datetime.now(UTC) - timedelta(seconds=1)
    assert delete_customer(engine, customer_hash("A", secret)) == {
        "predictions": 0,
        "ground_truth": 0,
    }
    after = datetime.now(UTC) + timedelta(seconds=1)
    records = [
        make_record("A", request_id="late", created_at=before),
        make_record("B", request_id="other", created_at=before),
        make_record("A", request_id="came-back", created_at=after),
    ]
    log_now(engine, tmp_path, records)
    with engine.connect() as connection:
        kept = set(connection.execute(select(PREDICTIONS.c.request_id)).scalars())
        tombstones = connection.execute(select(DELETED_CUSTOMERS)).all()
    assert kept == {"other", "came-back"}
    assert [t.customer_hash for t in tombstones] == [customer_hash("A", secret)]


def test_spooled_rows_and_labels_of_a_deleted_customer_are_dropped_on_replay(
    engine: Engine, tmp_path: Path, make_record: Make, secret: bytes, wait_for: Callable[..., None]
) -> None:
    """Rows spooled during an outage are replayed after the customer's deletion."""
    spool_dir = tmp_path / "spool"
    spooled_at = datetime.now(UTC) - timedelta(seconds=1)
    Spool(spool_dir).append(
        [record_row(make_record(c, created_at=spooled_at)) for c in ("A", "A", "B")]
    )
    labels = [Label(customer_id=c, churned=True, observed_date=date(2026, 1, 1)) for c in "AB"]
    Spool(spool_dir, LABELS_SPOOL_PREFIX).append(label_rows(labels, secret, spooled_at))
    delete_customer(engine, customer_hash("A", secret))
    with PredictionLog(engine, spool_dir) as log:
        wait_for(lambda: not list(spool_dir.glob("*-*")), what="spool replayed")
        assert log.flush(10)
    assert hashes_in(engine) == [customer_hash("B", secret)]
    assert hashes_in(engine, GROUND_TRUTH) == [customer_hash("B", secret)]


def test_labels_received_before_a_deletion_are_dropped_later_ones_kept(
    engine: Engine, secret: bytes
) -> None:
    """`/feedback` and `churn feedback import` store through the same upsert."""
    label = Label(customer_id="A", churned=True, observed_date=date(2026, 1, 1))
    delete_customer(engine, customer_hash("A", secret))
    with engine.begin() as connection:
        stale = label_rows([label], secret, datetime.now(UTC) - timedelta(seconds=1))
        upsert_ground_truth(connection, stale)
    assert hashes_in(engine, GROUND_TRUTH) == []
    assert store_labels(engine, [label], secret) == 1  # received now: after the deletion
    assert hashes_in(engine, GROUND_TRUTH) == [customer_hash("A", secret)]


def test_a_deletion_waits_for_an_insert_in_flight_and_removes_its_rows(
    engine: Engine, make_record: Make, secret: bytes
) -> None:
    """The race on PostgreSQL (READ COMMITTED): a writer's transaction has inserted the
    customer's row but not committed when the deletion starts. The deletion must wait for
    it and delete the row, not commit past it and leave the row behind."""
    hashed = customer_hash("A", secret)
    writer = engine.connect()
    transaction = writer.begin()
    insert_rows(writer, [record_row(make_record("A"))])
    result: dict[str, dict[str, int]] = {}
    deleting = threading.Thread(target=lambda: result.update(d=delete_customer(engine, hashed)))
    deleting.start()
    time.sleep(1.0)  # the deletion is now running; it must still be waiting
    still_waiting = deleting.is_alive()
    transaction.commit()
    writer.close()
    deleting.join(30)
    assert still_waiting, "the deletion did not wait for the insert in flight"
    assert result["d"]["predictions"] == 1
    assert hashes_in(engine) == []
