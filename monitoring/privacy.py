"""Right to deletion and retention: removing a customer's rows, and rows past their time.

Both work on hashes: the caller hashes a customer id with `identity.customer_hash` (the
database never holds the raw id, so it could not be searched by it anyway).

A deletion is complete when it commits, however late the customer's other rows arrive:
it leaves a tombstone (`deleted_customers`), and every insert path of predictions and
labels calls `drop_deleted_rows` after its insert, in the same transaction, so a row of
the customer created up to the deletion (buffered by another worker, spooled during an
outage, sent by another replica) is dropped on arrival. A customer who comes back later is
logged as usual: only rows created at or before the tombstone's time go.

The race with a concurrent insert (PostgreSQL, READ COMMITTED): the deletion takes
`SHARE ROW EXCLUSIVE` on both tables, so it waits for insert transactions in flight (and
then deletes their rows) and holds new inserts back until it commits; their purge, a
statement after their insert, then sees the tombstone. SQLite has one writer at a time.
Tombstone times and row times come from the servers' clocks: replicas need NTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Table, delete, select, text

from monitoring.database import DELETED_CUSTOMERS, GROUND_TRUTH, PREDICTIONS, dialect_insert

_RETENTION_CHUNK_ROWS = 10_000
_CREATED_AT = {"predictions": "created_at", "ground_truth": "received_at"}
"""Each table's row-creation time, compared with the tombstone's."""


def delete_customer(engine: Engine, customer_hash: str) -> dict[str, int]:
    """Delete a customer's predictions and labels and leave a tombstone (one transaction)."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("LOCK TABLE predictions, ground_truth IN SHARE ROW EXCLUSIVE MODE")
            )
        # On SQLite the first DELETE takes the database's write lock.
        predictions = connection.execute(
            delete(PREDICTIONS).where(PREDICTIONS.c.customer_hash == customer_hash)
        ).rowcount
        labels = connection.execute(
            delete(GROUND_TRUTH).where(GROUND_TRUTH.c.customer_hash == customer_hash)
        ).rowcount
        # Taken under the lock: no row created before it can be inserted after the commit.
        _leave_tombstone(connection, customer_hash, datetime.now(UTC))
    return {"predictions": predictions, "ground_truth": labels}


def _leave_tombstone(connection: Connection, customer_hash: str, deleted_at: datetime) -> None:
    insert = dialect_insert(connection, DELETED_CUSTOMERS)
    connection.execute(
        insert.values(customer_hash=customer_hash, deleted_at=deleted_at).on_conflict_do_update(
            index_elements=["customer_hash"],
            set_={"deleted_at": insert.excluded.deleted_at},
            where=DELETED_CUSTOMERS.c.deleted_at < insert.excluded.deleted_at,
        )
    )


def drop_deleted_rows(
    connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> int:
    """Delete the rows of these (just inserted) that a tombstone covers; the count.

    Called by every insert path right after its insert, in its transaction (see above).
    Only tombstones at or after the batch's oldest row can cover one of its rows, so one
    indexed range look-up (usually empty: deletions are rare) decides, and a DELETE runs
    only for the batch's customers it finds.
    """
    if not rows:
        return 0
    time_column = _CREATED_AT[table.name]
    oldest = min(row[time_column] for row in rows)
    recent = connection.execute(
        select(DELETED_CUSTOMERS.c.customer_hash, DELETED_CUSTOMERS.c.deleted_at).where(
            DELETED_CUSTOMERS.c.deleted_at >= oldest
        )
    ).all()
    if not recent:
        return 0
    in_batch = {row["customer_hash"] for row in rows}
    created_at = table.c[time_column]
    dropped = 0
    for customer_hash, deleted_at in recent:
        if customer_hash in in_batch:
            dropped += connection.execute(
                delete(table).where(
                    table.c.customer_hash == customer_hash, created_at <= deleted_at
                )
            ).rowcount
    return dropped


def delete_predictions_older_than(engine: Engine, days: int, now: datetime | None = None) -> int:
    """Delete predictions logged more than `days` days before `now`; returns the count.

    Deletes in chunks, each its own transaction, so a large backlog never holds the write
    lock long enough to stall the prediction log (SQLite has one writer at a time).
    """
    if days < 0:
        raise ValueError(f"days must be >= 0, not {days}")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    old = (
        select(PREDICTIONS.c.id)
        .where(PREDICTIONS.c.created_at < cutoff)
        .limit(_RETENTION_CHUNK_ROWS)
        .scalar_subquery()
    )
    statement = delete(PREDICTIONS).where(PREDICTIONS.c.id.in_(old))
    total = 0
    while True:
        with engine.begin() as connection:
            deleted = connection.execute(statement).rowcount
        total += deleted
        if deleted < _RETENTION_CHUNK_ROWS:
            return total
