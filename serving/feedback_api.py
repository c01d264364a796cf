"""`POST /feedback` and `DELETE /customers/{id}`: plain functions the service's routes call.

Labels are precious (they drive monitoring and retraining), so `/feedback` answers 200
only once they are committed, and 202 when the database is down and they were fsynced to
the on-disk spool instead; the prediction log replays that spool when the database is back.
With the database down and the spool not writable it answers 503 with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import orjson
from pydantic import Field, TypeAdapter, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from core.schema import CustomerId
from monitoring.feedback import Label, spool_labels, store_labels
from monitoring.privacy import delete_customer
from serving.adapters import Adapters
from serving.cache import CacheUnavailable
from serving.errors import describe_validation_errors, list_problems, validation_body

logger = logging.getLogger("churn.feedback")

MAX_LABELS_PER_REQUEST = 10_000

_labels = TypeAdapter(Annotated[list[Label], Field(fail_fast=True)])
"""Fail-fast: a refused array keeps no error per label (`list_problems` reports them)."""
_customer_id: TypeAdapter[str] = TypeAdapter(CustomerId)


def parse_labels(data: Any) -> list[Label]:
    """One label object or a JSON array of them (parsed). Raises ValidationError."""
    if isinstance(data, dict):
        return [Label.model_validate(data)]
    return _labels.validate_python(data)


def _invalid_labels(data: Any, error: ValidationError) -> dict[str, Any]:
    """The 422 body: for an array, its first invalid labels and how many were unchecked."""
    problems = list_problems(_labels, data) if isinstance(data, list) else None
    if problems is None or not problems.errors:
        errors = error.errors(include_url=False, include_input=False)
        return describe_validation_errors([dict(e) for e in errors])
    return describe_validation_errors(problems.errors, problems.unchecked)


async def receive_labels(runtime: Adapters, body: bytes) -> tuple[int, dict[str, Any]]:
    """Validate and store labels: (HTTP status, answer body)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        return 422, {
            "error": f"invalid request: body: not JSON ({error})",
            "detail": [{"field": "body", "rule": "json_invalid", "message": str(error)}],
        }
    if isinstance(data, list) and len(data) > MAX_LABELS_PER_REQUEST:
        message = f"labels: at most {MAX_LABELS_PER_REQUEST} per request, got {len(data)}"
        return 413, {"error": message}
    try:
        labels = parse_labels(data)
    except ValidationError as error:
        return 422, _invalid_labels(data, error)
    if not labels:
        return 422, {
            "error": "invalid request: body: no labels (too_short)",
            "detail": [{"field": "body", "rule": "too_short", "message": "no labels"}],
        }
    try:
        stored = await asyncio.to_thread(
            store_labels, runtime.log.engine, labels, runtime.id_secret
        )
    except SQLAlchemyError as error:
        down = f"database unavailable ({type(error).__name__})"
        try:
            await asyncio.to_thread(
                spool_labels, runtime.settings.spool_dir, labels, runtime.id_secret
            )
        except OSError as spool_error:  # nowhere to keep them: say so, the sender retries
            reason = f"{down} and spool not writable ({type(spool_error).__name__})"
            logger.error("%d labels refused: %s: %s", len(labels), reason, spool_error)
            return 503, {"error": f"labels not stored: {reason}; retry later"}
        logger.warning("%s: %d labels spooled", down, len(labels))
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
    runtime: Adapters, customer_id: str
) -> tuple[int, dict[str, Any]]:
    """Remove a customer's predictions, labels and cache entries: (status, body).

    Complete when it answers 200, in every worker and replica: the cache goes first (every
    worker's entries, and no late write brings one back for a TTL), so nothing served from
    it afterwards predates the deletion; then the database rows, leaving a tombstone that
    drops the rows still on their way (other workers' buffers, the spool) on arrival. This
    worker's buffered rows are flushed first only so that the counts include them.
    """
    problems = customer_id_problems(customer_id)
    if problems:
        return 422, problems
    hashed = runtime.hash_id(customer_id)
    try:
        cache_entries: int | None = await runtime.forget_customer(customer_id)
    except CacheUnavailable:
        cache_entries = None
    await asyncio.to_thread(runtime.log.flush, 10.0)
    try:
        deleted: dict[str, Any] = await asyncio.to_thread(
            delete_customer, runtime.log.engine, hashed
        )
    except SQLAlchemyError as error:
        done = "cache entries deleted" if cache_entries is not None else "nothing deleted"
        return 503, {"error": f"database unavailable, {done}; retry: {type(error).__name__}"}
    if cache_entries is None:
        return 503, {
            "error": "cache unavailable: database rows deleted, cache entries not; retry",
            "deleted": deleted,
        }
    deleted["cache_entries"] = cache_entries
    return 200, {"deleted": deleted}
