"""Error answers the API promises: 422 naming the field and the rule it broke.

BentoML answers pydantic validation errors with 400 and pydantic's detail list;
`ValidationErrorsAs422` reshapes those, and the other endpoints build the same body with
`validation_body`. Answers and log lines list at most `MAX_ERROR_DETAILS` problems and say
how many were left out, so an invalid request costs little to answer whatever it holds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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


class ValidationErrorsAs422:
    """ASGI middleware: BentoML answers validation errors with 400; the API promises 422.

    Only 400 answers are buffered and rewritten; every other response streams through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def rewrite(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 400:
                held.append(message)
                return
            if not held:
                await send(message)
                return
            held.append(message)
            if message.get("more_body"):
                return
            body = b"".join(m.get("body", b"") for m in held[1:])
            start = held[0]
            try:
                detail = json.loads(body)["detail"]
                body = json.dumps(describe_validation_errors(detail)).encode()
                start = {**start, "status": 422}
                start["headers"] = [
                    (k, str(len(body)).encode() if k.lower() == b"content-length" else v)
                    for k, v in start["headers"]
                ]
            except (ValueError, KeyError, TypeError):
                pass  # not a validation error: pass the 400 through unchanged
            await send(start)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewrite)


def invalid_fields(error: ValidationError | Sequence[dict[str, Any]]) -> str:
    """The fields a validation error names (the first `MAX_ERROR_DETAILS`, and how many
    more), never their values (ids are personal data)."""
    errors = error.errors(include_input=False) if isinstance(error, ValidationError) else error
    names = [_field_name(e.get("loc", ())) for e in errors]
    listed = ", ".join(dict.fromkeys(names[:MAX_ERROR_DETAILS]))
    more = len(names) - MAX_ERROR_DETAILS
    return f"{listed} and {more} more problems" if more > 0 else listed


class QuietValidationErrors(logging.Filter):
    """BentoML logs every rejected request with a traceback whose pydantic message repeats
    the input (customer ids included). Keep one line naming the fields, never the values."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ValidationError):
            record.msg, record.args = "rejected request: invalid %s", (invalid_fields(error),)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_validation_errors() -> None:
    """Install `QuietValidationErrors` on BentoML's HTTP error logger (idempotent)."""
    target = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, QuietValidationErrors) for f in target.filters):
        target.addFilter(QuietValidationErrors())
