"""Error answers the API promises: 422 naming the field and the rule it broke.

Every route builds its 422 with `validation_body` (or `describe_validation_errors` from
pydantic's detail list). Answers and log lines list at most `MAX_ERROR_DETAILS` problems and say
how many were left out, so an invalid request costs little to answer whatever it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError


def _field_name(location: Sequence[Any]) -> str:
    """`("customers", 3, "age")` → `customers[3].age`; an empty location is the body."""
    name = ""
    for part in location:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


MAX_ERROR_DETAILS = 20
"""Problems listed in a 422 answer or a log line; the rest are counted, not listed."""


def validation_body(problems: Sequence[dict[str, str]], unchecked: int = 0) -> dict[str, Any]:
    """The 422 body: a one-line summary and, per problem (the first `MAX_ERROR_DETAILS`),
    the field, rule and message. `truncated` counts the problems left out, `unchecked`
    the items after them that were not validated."""
    shown = list(problems[:MAX_ERROR_DETAILS])
    summary = "; ".join(f"{p['field']}: {p['message']} ({p['rule']})" for p in shown)
    body: dict[str, Any] = {"error": f"invalid request: {summary}", "detail": shown}
    left_out = len(problems) - len(shown)
    if left_out:
        body["truncated"] = left_out
        body["error"] += f"; {left_out} more problems not listed"
    if unchecked:
        body["unchecked"] = unchecked
        body["error"] += f"; the {unchecked} items after the last listed were not checked"
    return body


def describe_validation_errors(
    detail: Sequence[dict[str, Any]], unchecked: int = 0
) -> dict[str, Any]:
    """Pydantic's error list → a 422 body naming each field and the rule it broke."""
    return validation_body(
        [
            {
                "field": _field_name(error.get("loc", ())),
                "rule": error.get("type", "invalid"),
                "message": error.get("msg", ""),
            }
            for error in detail
        ],
        unchecked,
    )


@dataclass(frozen=True)
class ListProblems:
    """The problems of an invalid JSON array, as far as they were looked for."""

    errors: list[dict[str, Any]]
    """Pydantic error dicts, located in the whole array."""
    unchecked: int
    """Items after the last invalid one inspected, not validated."""


def list_problems(adapter: TypeAdapter[Any], items: list[Any]) -> ListProblems:
    """Find invalid items with a fail-fast list `adapter`: it stops at the first invalid
    item, so validation resumes after it until `MAX_ERROR_DETAILS` problems are found.
    However many items are invalid, this costs one validation of the array plus the
    errors of at most `MAX_ERROR_DETAILS` items (pydantic keeps every error it finds:
    1.9 M of them took 4 GB)."""
    found: list[dict[str, Any]] = []
    start = 0
    while start < len(items) and len(found) < MAX_ERROR_DETAILS:
        try:
            adapter.validate_python(items[start:])
        except ValidationError as error:
            errors = error.errors(include_url=False, include_input=False)
            index = errors[0]["loc"][0] if errors and errors[0]["loc"] else None
            if not isinstance(index, int):  # the array itself is wrong
                return ListProblems(found + [dict(e) for e in errors], 0)
            found += [{**e, "loc": (start + index, *e["loc"][1:])} for e in errors]
            start += index + 1
            continue
        start = len(items)  # the rest is valid
    return ListProblems(found, len(items) - start)


def invalid_fields(error: ValidationError | Sequence[dict[str, Any]]) -> str:
    """The fields a validation error names (the first `MAX_ERROR_DETAILS`, and how many
    more), never their values (ids are personal data)."""
    errors = error.errors(include_input=False) if isinstance(error, ValidationError) else error
    names = [_field_name(e.get("loc", ())) for e in errors]
    listed = ", ".join(dict.fromkeys(names[:MAX_ERROR_DETAILS]))
    more = len(names) - MAX_ERROR_DETAILS
    return f"{listed} and {more} more problems" if more > 0 else listed
