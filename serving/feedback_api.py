"""`POST /feedback` and `DELETE /customers/{id}`: plain functions the service's routes call.

Labels are precious (they drive monitoring and retraining), so `/feedback` answers 200
only once they are committed, and 202 when the database is down and they were fsynced to
the on-disk spool instead; the prediction log replays that spool when the database is back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from monitoring.feedback import Label, spool_labels, store_labels
from monitoring.privacy import delete_customer
from serving.cache import CacheUnavailable
from serving.errors import describe_validation_errors, validation_body
from serving.runtime import ServingRuntime
from training.schema import CustomerId

logger = logging.getLogger("churn.feedback")

MAX_LABELS_PER_REQUEST = 10_000

_labels = TypeAdapter(list[Label])
_customer_id: TypeAdapter[str] = TypeAdapter(CustomerId)


def parse_labels(body: bytes) -> list[Label]:
    """One label object or a JSON array of them. Raises ValidationError or ValueError."""
    data = orjson.loads(body)
    if isinstance(data, dict):
        return [Label.model_validate(data)]
    return _labels.validate_python(data)


async def receive_labels(runtime: ServingRuntime, body: bytes) -> tuple[int, dict[str, Any]]:
    """Validate and store labels: (HTTP status, answer body)."""
    try:
        labels = parse_labels(body)
    except ValidationError as error:
        return 422, describe_validation_errors(error.errors())  # type: ignore[arg-type]
    except orjson.JSONDecodeError as error:
        return 422, {
            "error": f"invalid request: body: not JSON ({error})",
            "detail": [{"field": "body", "rule": "json_invalid", "message": str(error)}],
        }
    if not labels:
        return 422, {
            "error": "invalid request: body: no labels (too_short)",
            "detail": [{"field": "body", "rule": "too_short", "message": "no labels"}],
        }
    if len(labels) > MAX_LABELS_PER_REQUEST:
        return 413, {"error": f"body: at most {MAX_LABELS_PER_REQUEST} labels per request"}
    try:
        stored = await asyncio.to_thread(
            store_labels, runtime.log.engine, labels, runtime.id_secret
        )
    except SQLAlchemyError as error:
        logger.warning("database unavailable, %d labels spooled: %s", len(labels), type(error))
        await asyncio.to_thread(spool_labels, runtime.settings.spool_dir, labels, runtime.id_secret)
        return 202, {"stored": 0, "spooled": len(labels)}
    return 200, {"stored": stored}


def customer_id_problems(customer_id: str) -> dict[str, Any] | None:
    """The 422 body for an id that breaks the schema's rule, or None if it is valid."""
    try:
        _customer_id.validate_python(customer_id)
    except ValidationError as error:
        return validation_body(
            [
                {"field": "customer_id", "rule": e["type"], "message": e["msg"]}
                for e in error.errors()
            ]
        )
    return None


async def delete_customer_everywhere(
    runtime: ServingRuntime, customer_id: str
) -> tuple[int, dict[str, Any]]:
    """Remove a customer's predictions, labels and cache entries: (status, body).

    This worker's buffered log rows are flushed first so none lands after the delete.
    """
    problems = customer_id_problems(customer_id)
    if problems:
        return 422, problems
    await asyncio.to_thread(runtime.log.flush, 10.0)
    hashed = runtime.hash_id(customer_id)
    try:
        deleted = await asyncio.to_thread(delete_customer, runtime.log.engine, hashed)
    except SQLAlchemyError as error:
        return 503, {"error": f"database unavailable, nothing deleted: {type(error).__name__}"}
    try:
        deleted["cache_entries"] = await runtime.forget_customer(customer_id)
    except CacheUnavailable:
        return 503, {
            "error": "cache unavailable: database rows deleted, cache entries not; retry",
            "deleted": deleted,
        }
    return 200, {"deleted": deleted}
