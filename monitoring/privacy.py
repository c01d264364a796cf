"""Right to deletion and retention: removing a customer's rows, and rows past their time.

Both work on hashes: the caller hashes a customer id with `identity.customer_hash` (the
database never holds the raw id, so it could not be searched by it anyway).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, select

from monitoring.database import GROUND_TRUTH, PREDICTIONS

_RETENTION_CHUNK_ROWS = 10_000


def delete_customer(engine: Engine, customer_hash: str) -> dict[str, int]:
    """Delete a customer's predictions and labels together (one transaction)."""
    with engine.begin() as connection:
        predictions = connection.execute(
            delete(PREDICTIONS).where(PREDICTIONS.c.customer_hash == customer_hash)
        ).rowcount
        labels = connection.execute(
            delete(GROUND_TRUTH).where(GROUND_TRUTH.c.customer_hash == customer_hash)
        ).rowcount
    return {"predictions": predictions, "ground_truth": labels}


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
