"""Retraining triggers: what the monitoring jobs hand to the retraining cycle.

A drift run records one when a column's PSI is significant; a performance run when a
measured metric falls below its bar or drops too far from the training figure. The
retraining cycle reads the unconsumed ones and marks them consumed when it acts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update

from monitoring.database import RETRAINING_TRIGGERS

REASONS = ("drift", "performance")


@dataclass(frozen=True)
class Trigger:
    """A recorded reason to retrain."""

    id: int
    reason: str
    model_version: str
    features: list[str]
    figures: dict[str, Any]
    created_at: datetime
    consumed_at: datetime | None


def record_trigger(
    engine: Engine,
    reason: str,
    model_version: str,
    features: Sequence[str],
    figures: dict[str, Any],
    now: datetime | None = None,
) -> int:
    """Store a trigger and return its id; `figures` is JSON (the numbers that tripped it)."""
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {REASONS}, got {reason!r}")
    row = {
        "reason": reason,
        "model_version": model_version,
        "features": list(features),
        "figures": figures,
        "created_at": now or datetime.now(UTC),
        "consumed_at": None,
    }
    with engine.begin() as connection:
        result = connection.execute(insert(RETRAINING_TRIGGERS).values(**row))
        key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def pending_triggers(engine: Engine) -> list[Trigger]:
    """Unconsumed triggers, oldest first."""
    query = (
        select(RETRAINING_TRIGGERS)
        .where(RETRAINING_TRIGGERS.c.consumed_at.is_(None))
        .order_by(RETRAINING_TRIGGERS.c.created_at, RETRAINING_TRIGGERS.c.id)
    )
    with engine.connect() as connection:
        return [Trigger(**row._mapping) for row in connection.execute(query)]


def consume_triggers(engine: Engine, ids: Sequence[int], now: datetime | None = None) -> int:
    """Mark triggers consumed (the retraining cycle acted on them); returns how many."""
    if not ids:
        return 0
    statement = (
        update(RETRAINING_TRIGGERS)
        .where(RETRAINING_TRIGGERS.c.id.in_(list(ids)))
        .where(RETRAINING_TRIGGERS.c.consumed_at.is_(None))
        .values(consumed_at=now or datetime.now(UTC))
    )
    with engine.begin() as connection:
        return int(connection.execute(statement).rowcount)
