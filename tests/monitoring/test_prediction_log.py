"""The prediction log against real databases: rows arrive once, none lost, memory bounded."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from launchers.pg_server import PostgresServer
from monitoring.database import PREDICTIONS, make_engine
from monitoring.identity import customer_hash
from monitoring.prediction_log import PredictionLog, PredictionRecord
from monitoring.records import record_row
from monitoring.spool import READY_SUFFIX, REJECTED_FOLDER, Spool
from tests.monitoring.conftest import SECRET

Make = Callable[..., PredictionRecord]
Count = Callable[..., int]
Wait = Callable[..., None]


def spool_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("predictions-*") if p.is_file())


def test_logged_rows_are_stored_with_the_hash_not_the_id(
    engine: Engine, tmp_path: Path, make_record: Make
) -> None:
    record = make_record("CUST-RAW-42", features={"customer_id": "CUST-RAW-42", "tenure_months": 7})
    with PredictionLog(engine, tmp_path / "spool", flush_ms=10) as log:
        log.log([record])
        assert log.flush(10)
    with engine.connect() as connection:
        row = connection.execute(select(PREDICTIONS)).mappings().one()
    assert row["customer_hash"] == customer_hash("CUST-RAW-42", SECRET)
    assert "CUST-RAW-42" not in repr(dict(row))
    assert row["features"] == {"tenure_months": 7}
    assert row["created_at"] == record.created_at
    assert (row["cache"], row["endpoint"], row["risk_level"]) == ("miss", "predict", "high")


def test_the_same_row_logged_twice_is_stored_once(
    engine: Engine, tmp_path: Path, make_record: Make, count: Count
) -> None:
    records = [make_record(f"C{i}") for i in range(20)]
    with PredictionLog(engine, tmp_path / "spool", batch_rows=7, flush_ms=10) as log:
        log.log(records)
        log.log(records[:5])
        assert log.flush(10)
        log.log(records)  # a retry after the first write committed
        assert log.flush(10)
    assert count(engine) == 20


def test_a_spool_replayed_twice_stores_each_row_once(
    engine: Engine, tmp_path: Path, make_record: Make, count: Count, wait_for: Wait
) -> None:
    """A replayer that crashed after inserting but before deleting the file."""
    records = [make_record(f"C{i}") for i in range(30)]
    spool_dir = tmp_path / "spool"
    Spool(spool_dir).append([record_row(r) for r in records])
    (first,) = spool_files(spool_dir)
    shutil.copy(first, spool_dir / f"predictions-0-copy{READY_SUFFIX}")
    with PredictionLog(engine, spool_dir, batch_rows=8, flush_ms=10) as log:
        log.log(records[:10])  # also logged directly
        wait_for(lambda: not spool_files(spool_dir), what="spool replayed")
        assert log.flush(10)
        assert log.stats().replayed == 60
    assert count(engine) == 30


def test_close_writes_what_is_still_queued(
    engine: Engine, tmp_path: Path, make_record: Make, count: Count
) -> None:
    log = PredictionLog(engine, tmp_path / "spool", batch_rows=10_000, flush_ms=600_000)
    log.log([make_record(f"C{i}") for i in range(50)])
    assert log.close(timeout=10)
    assert count(engine) == 50
    assert log.pending_rows() == 0
    assert log.close(timeout=1)  # idempotent
    log.log([make_record("late")])  # a request finishing during shutdown
    assert log.stats().spooled == 1
    assert len(spool_files(tmp_path / "spool")) == 1


def test_rows_beyond_the_memory_bound_spill_to_disk(
    engine: Engine, tmp_path: Path, make_record: Make, count: Count, wait_for: Wait
) -> None:
    spool_dir = tmp_path / "spool"
    log = PredictionLog(engine, spool_dir, max_queue_rows=10, start=False)
    for chunk in (4, 5, 3, 13):  # 25 rows, one call crossing the bound
        log.log([make_record() for _ in range(chunk)])
        assert log.pending_rows() <= 10
    assert log.pending_rows() == 10
    assert log.stats().spooled == 15
    lines = sum(len(p.read_bytes().splitlines()) for p in spool_files(spool_dir))
    assert lines == 15
    log.start()
    wait_for(lambda: count(engine) == 25, what="queued and spooled rows in the database")
    assert log.close(10)
    assert log.stats().written == 10 and log.stats().replayed == 15


def test_log_never_raises(engine: Engine, tmp_path: Path, make_record: Make) -> None:
    with PredictionLog(engine, tmp_path / "spool") as log:
        log.log([object()])  # type: ignore[list-item]
        log.log([])
        assert log.flush(10)
        assert log.stats().lost == 1


def test_a_row_the_database_refuses_does_not_hold_back_the_others(
    pg_url: str, tmp_path: Path, make_record: Make, count: Count
) -> None:
    """PostgreSQL enforces VARCHAR lengths: the bad row is set aside, the rest stored."""
    engine = make_engine(pg_url)
    records = [make_record(f"C{i}") for i in range(5)] + [make_record(risk_level="x" * 20)]
    with PredictionLog(engine, tmp_path / "spool", flush_ms=10) as log:
        log.log(records)
        assert log.flush(10)
        assert log.stats().rejected == 1
    assert count(engine) == 5
    assert (tmp_path / "spool" / REJECTED_FOLDER / f"predictions{READY_SUFFIX}").exists()
    engine.dispose()


def test_postgres_outage_loses_and_duplicates_nothing(
    postgres: PostgresServer,
    pg_url: str,
    tmp_path: Path,
    make_record: Make,
    count: Count,
    wait_for: Wait,
) -> None:
    """Rows keep coming before, during and after a stop of the server."""
    spool_dir = tmp_path / "spool"
    engine = make_engine(pg_url)
    log = PredictionLog(
        engine, spool_dir, batch_rows=20, flush_ms=5, retry_initial_s=0.05, retry_max_s=0.2
    )
    stop = threading.Event()
    produced = 0

    def produce() -> None:
        nonlocal produced
        while not stop.is_set():
            log.log([make_record(f"C{produced}", request_id=f"r{produced}")])
            produced += 1
            if produced % 10 == 0:
                stop.wait(0.002)  # pace the traffic; not a timing assertion

    producer = threading.Thread(target=produce)
    try:
        producer.start()
        wait_for(lambda: log.stats().written > 0, what="rows written before the outage")
        postgres.stop()
        wait_for(lambda: log.stats().spooled > 0, what="rows spooled during the outage")
        postgres.start()
        wait_for(lambda: log.stats().replayed > 0, what="the spool replayed after the outage")
        written = log.stats().written
        wait_for(lambda: log.stats().written > written, what="rows written after the outage")
    finally:
        stop.set()
        producer.join(60)
        postgres.start()
    wait_for(
        lambda: count(engine) == produced and not spool_files(spool_dir),
        timeout=30,
        what="every row in the database",
    )
    assert log.close(10)
    stats = log.stats()
    assert stats.failures > 0 and stats.lost == 0 and stats.rejected == 0
    with engine.connect() as connection:
        request_ids = connection.execute(select(PREDICTIONS.c.request_id)).scalars().all()
    assert sorted(request_ids) == sorted(f"r{i}" for i in range(produced))
    engine.dispose()


def test_the_service_starts_while_postgres_is_down(
    postgres: PostgresServer,
    pg_url: str,
    tmp_path: Path,
    make_record: Make,
    count: Count,
    wait_for: Wait,
) -> None:
    """No schema yet, no server: logging works, and the schema comes with the server."""
    postgres.stop()
    try:
        log = PredictionLog(
            pg_url, tmp_path / "spool", flush_ms=5, retry_initial_s=0.05, retry_max_s=0.2
        )
        log.log([make_record(f"C{i}") for i in range(40)])
        assert log.flush(15)  # spooled, since the database is down
        assert log.stats().spooled == 40
    finally:
        postgres.start()
    engine = make_engine(pg_url)
    wait_for(lambda: log.stats().replayed == 40, what="spool replayed after start-up")
    assert count(engine) == 40
    assert log.close(10)
    engine.dispose()


@pytest.mark.parametrize("rows", [0, 3])
def test_flush_returns_when_nothing_is_pending(
    engine: Engine, tmp_path: Path, make_record: Make, rows: int
) -> None:
    with PredictionLog(engine, tmp_path / "spool") as log:
        log.log([make_record(f"C{i}") for i in range(rows)])
        assert log.flush(10)
        assert log.flush(10)
