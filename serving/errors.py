"""Error answers the API promises: 422 naming the field and the rule it broke.

BentoML answers pydantic validation errors with 400 and pydantic's detail list;
`ValidationErrorsAs422` reshapes those, and the other endpoints build the same body with
`validation_body`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _field_name(location: Sequence[Any]) -> str:
    """`("customers", 3, "age")` → `customers[3].age`; an empty location is the body."""
    name = ""
    for part in location:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def validation_body(problems: list[dict[str, str]]) -> dict[str, Any]:
    """The 422 body: a one-line summary and, per problem, the field, rule and message."""
    summary = "; ".join(f"{p['field']}: {p['message']} ({p['rule']})" for p in problems)
    return {"error": f"invalid request: {summary}", "detail": problems}


def describe_validation_errors(detail: list[dict[str, Any]]) -> dict[str, Any]:
    """Pydantic's error list → a 422 body naming each field and the rule it broke."""
    return validation_body(
        [
            {
                "field": _field_name(error.get("loc", ())),
                "rule": error.get("type", "invalid"),
                "message": error.get("msg", ""),
            }
            for error in detail
        ]
    )


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


def invalid_fields(error: ValidationError) -> str:
    """The fields a validation error names, never their values (ids are personal data)."""
    return ", ".join(sorted({_field_name(e.get("loc", ())) for e in error.errors()}))


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
