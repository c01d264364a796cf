"""The 422 answers of the scoring routes, at a cost that does not grow with the body.

A batch is validated fail-fast (it stops at its first invalid customer); when it fails,
`list_problems` finds the first `MAX_ERROR_DETAILS` problems and says how many customers
were left unchecked. Rejections are logged by field, never by value.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import orjson
from pydantic import Field, TypeAdapter, ValidationError

from core.schema import CustomerData
from serving.errors import describe_validation_errors, invalid_fields, list_problems

logger = logging.getLogger("churn.gateway")

customer_list = TypeAdapter(Annotated[list[CustomerData], Field(fail_fast=True)])
"""`/predict/batch`'s body; fail-fast, so a refused batch keeps no error per customer."""


def invalid(error: ValidationError) -> dict[str, Any]:
    """The 422 body for a request that failed validation (logged by field, not value)."""
    details = [dict(d) for d in error.errors(include_url=False, include_input=False)]
    logger.info("rejected request: invalid %s", invalid_fields(details))
    return describe_validation_errors(details)


def invalid_batch(error: ValidationError, body: bytes) -> dict[str, Any]:
    """The 422 body for a batch: its first invalid customers (`list_problems`), logged by
    field. Not a hot path: the batch has already failed validation."""
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError:
        items = None
    if not isinstance(items, list):
        return invalid(error)
    problems = list_problems(customer_list, items)
    if not problems.errors:  # valid to Python-mode validation: report JSON mode's findings
        return invalid(error)
    unchecked = f"; {problems.unchecked} customers not checked" if problems.unchecked else ""
    logger.info("rejected request: invalid %s%s", invalid_fields(problems.errors), unchecked)
    return describe_validation_errors(problems.errors, problems.unchecked)
