"""A prediction-log row: the record the service builds, and its column values.

The same column values go to the database and, as JSON, to the spool; `decode_row`
turns a spooled line back into them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, String

from core.schema import ID_COLUMN
from monitoring.database import PREDICTIONS, dialect_insert
from monitoring.privacy import drop_deleted_rows
from monitoring.rows import RowCodec

_MAX_REQUEST_ID = cast(String, PREDICTIONS.c.request_id.type).length


def new_record_id() -> str:
    """A row's idempotency key: generated once, kept through spooling and retries.
    128 random bits as 32 hex characters, like `uuid4().hex` without the object."""
    return os.urandom(16).hex()


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Shadow:
    """The other model's answer to a request: its version and churn probability."""

    version: str
    probability: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PredictionRecord:
    """One served prediction, as the `predictions` table stores it: its fields are the
    table's columns (`RowCodec` checks so at import) and drive `record_row`/`decode_row`.

    `customer_hash` is computed by the caller (`identity.customer_hash`): the log never
    sees raw customer ids. The record takes `features` over and removes the `customer_id`
    key from it: the one place the id leaves logged features, whichever path built the
    record, so callers pass the request's fields as they are.
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
    model_arm: str = "champion"
    """Which arm of the experiment answered: 'champion' or 'challenger'."""
    shadow_version: str | None = None
    """The other model of the experiment; None while no challenger is set."""
    shadow_probability: float | None = None
    """The other model's probability for the same request (paired comparison)."""

    def __post_init__(self) -> None:
        self.features.pop(ID_COLUMN, None)  # in place: no copy per row on the request path

    @classmethod
    def from_answer(
        cls,
        prediction: Mapping[str, Any],
        *,
        request_id: str,
        customer_hash: str,
        features: dict[str, Any],
        latency_ms: float,
        cache: str,
        endpoint: str,
        default_model_version: str | None,
        shadow: Shadow | None = None,
    ) -> PredictionRecord:
        """The record of a served answer (a `Prediction`-shaped mapping): the outcome from
        the answer, the rest from the request. A cached answer may predate the version
        field, hence `default_model_version`; `record_row` makes every value plain."""
        return cls(
            request_id=request_id,
            customer_hash=customer_hash,
            model_version=prediction.get("model_version", default_model_version),
            features=features,
            churn_probability=prediction["churn_probability"],
            will_churn=prediction["will_churn"],
            risk_level=prediction["risk_level"],
            latency_ms=latency_ms,
            cache=cache,
            endpoint=endpoint,
            model_arm=prediction.get("model_arm", "champion"),
            shadow_version=shadow.version if shadow else None,
            shadow_probability=shadow.probability if shadow else None,
        )


_CODEC = RowCodec(PredictionRecord, PREDICTIONS)
COLUMNS: tuple[str, ...] = _CODEC.columns


def record_row(record: PredictionRecord) -> dict[str, Any]:
    """Column values with plain Python types (a numpy scalar would not bind on psycopg).

    A client-chosen request id longer than the column is cut rather than refused.
    """
    row = _CODEC.row(record)
    row["request_id"] = row["request_id"][:_MAX_REQUEST_ID]
    return row


def decode_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A spooled row back to column values. Raises KeyError/TypeError/ValueError."""
    return _CODEC.decode(row)


def insert_rows(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT (id) DO NOTHING: a retried or replayed row is a no-op. Rows
    of a customer deleted after they were created are then dropped (`drop_deleted_rows`)."""
    statement = dialect_insert(connection, PREDICTIONS).on_conflict_do_nothing(
        index_elements=["id"]
    )
    connection.execute(statement, rows)
    drop_deleted_rows(connection, PREDICTIONS, rows)
