"""What complete deletions cost on the hot paths (issue 13, point 1).

    .venv/bin/python benchmarks/deletion_costs.py                     # SQLite in a temp folder
    .venv/bin/python benchmarks/deletion_costs.py --database-url postgresql://...

Prints, each as a median over `--repeat` runs:
- a 500-row prediction-log batch insert with the tombstone purge (`insert_rows` as shipped)
  and without it (the bare INSERT), over a tombstone table of `--tombstones` deletions;
- an in-process cache look-up with the host's deletion-notice check (an `fstat` per
  look-up) and without it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete

from monitoring.database import PREDICTIONS, dialect_insert, make_engine, upgrade_schema
from monitoring.identity import customer_hash
from monitoring.privacy import delete_customer
from monitoring.records import PredictionRecord, insert_rows, record_row
from serving.cache import LocalCache
from serving.deletions import DeletionNotices

SECRET = b"benchmark-secret"
BATCH_ROWS = 500


def bare_insert(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """The insert without the purge: what `insert_rows` did before."""
    statement = dialect_insert(connection, PREDICTIONS).on_conflict_do_nothing(
        index_elements=["id"]
    )
    connection.execute(statement, rows)


def batch(start: int) -> list[dict[str, Any]]:
    return [
        record_row(
            PredictionRecord(
                request_id=f"bench-{start + i}",
                customer_hash=customer_hash(f"C{start + i}", SECRET),
                model_version="bench",
                features={"tenure_months": 3},
                churn_probability=0.5,
                will_churn=True,
                risk_level="medium",
                latency_ms=1.0,
                cache="miss",
                endpoint="predict",
            )
        )
        for i in range(BATCH_ROWS)
    ]


def time_inserts(
    engine: Engine, write: Callable[[Connection, list[dict[str, Any]]], None], repeat: int
) -> float:
    """Median milliseconds per 500-row batch (each its own transaction)."""
    timings = []
    for run in range(repeat):
        rows = batch(run * BATCH_ROWS)
        started = time.perf_counter()
        with engine.begin() as connection:
            write(connection, rows)
        timings.append((time.perf_counter() - started) * 1000)
    with engine.begin() as connection:
        connection.execute(delete(PREDICTIONS))
    return statistics.median(timings)


async def time_lookups(cache: LocalCache, lookups: int) -> float:
    """Nanoseconds per look-up of a cached key."""
    await cache.set("key", b"value", customer_hash("C1", SECRET))
    started = time.perf_counter_ns()
    for _ in range(lookups):
        await cache.lookup("key")
    return (time.perf_counter_ns() - started) / lookups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="default: SQLite in a temporary folder")
    parser.add_argument("--tombstones", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--lookups", type=int, default=200_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(args.database_url or f"sqlite:///{folder}/bench.db")
        upgrade_schema(engine)
        for i in range(args.tombstones):
            delete_customer(engine, customer_hash(f"gone-{i}", SECRET))
        bare = time_inserts(engine, bare_insert, args.repeat)
        purged = time_inserts(engine, insert_rows, args.repeat)
        print(f"database: {engine.dialect.name}, {args.tombstones:,} tombstones")
        print(f"500-row insert, bare: {bare:.2f} ms; with the purge: {purged:.2f} ms")
        engine.dispose()

        plain = asyncio.run(time_lookups(LocalCache(100, 300), args.lookups))
        notices = DeletionNotices(Path(folder) / "cache-deletions")
        checked = asyncio.run(time_lookups(LocalCache(100, 300, notices=notices), args.lookups))
        print(f"local cache hit: {plain:.0f} ns; with the notice check: {checked:.0f} ns")


if __name__ == "__main__":
    main()
