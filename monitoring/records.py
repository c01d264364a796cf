"""A prediction-log row: the record the service builds, and its column values.

The same column values go to the database and, as JSON, to the spool; `decode_row`
turns a spooled line back into them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from monitoring.database import PREDICTIONS, dialect_insert
from monitoring.privacy import drop_deleted_rows

_RAW_ID_FIELD = "customer_id"
_MAX_REQUEST_ID = 64


def new_record_id() -> str:
    """A row's idempotency key: generated once, kept through spooling and retries.
    128 random bits as 32 hex characters, like `uuid4().hex` without the object."""
    return os.urandom(16).hex()


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class PredictionRecord:
    """One served prediction, as the `predictions` table stores it.

    `customer_hash` is computed by the caller (`identity.customer_hash`): the log never
    sees raw customer ids, and drops a stray `customer_id` key from `features`.
    """

    request_id: str
    customer_hash: str
    model_version: str
    features: dict[str, Any]
    churn_probability: float
    will_churn: bool
    risk_level: str
    latency_ms: float
    cache: str
    """'hit', 'miss' or 'none': which cache path served the prediction."""
    endpoint: str
    """'predict' or 'batch'."""
    id: str = field(default_factory=new_record_id)
    created_at: datetime = field(default_factory=_utc_now)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(PredictionRecord))


def record_row(record: PredictionRecord) -> dict[str, Any]:
    """Column values with plain Python types (a numpy scalar would not bind on psycopg).

    A client-chosen request id longer than the column is cut rather than refused.
    """
    features = record.features
    if _RAW_ID_FIELD in features:
        features = {k: v for k, v in features.items() if k != _RAW_ID_FIELD}
    return {
        "id": str(record.id),
        "request_id": str(record.request_id)[:_MAX_REQUEST_ID],
        "customer_hash": str(record.customer_hash),
        "model_version": str(record.model_version),
        "features": features,
        "churn_probability": float(record.churn_probability),
        "will_churn": bool(record.will_churn),
        "risk_level": str(record.risk_level),
        "latency_ms": float(record.latency_ms),
        "cache": str(record.cache),
        "endpoint": str(record.endpoint),
        "created_at": record.created_at,
    }


def decode_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A spooled row back to column values. Raises KeyError/TypeError/ValueError."""
    decoded = {name: row[name] for name in COLUMNS}
    decoded["created_at"] = datetime.fromisoformat(row["created_at"])
    return decoded


def insert_rows(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT (id) DO NOTHING: a retried or replayed row is a no-op. Rows
    of a customer deleted after they were created are then dropped (`drop_deleted_rows`)."""
    statement = dialect_insert(connection, PREDICTIONS).on_conflict_do_nothing(
        index_elements=["id"]
    )
    connection.execute(statement, rows)
    drop_deleted_rows(connection, PREDICTIONS, rows)
