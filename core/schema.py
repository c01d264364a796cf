"""The customer schema: request, response and training-table columns in one place.

`CustomerData` is the single source of truth. The raw columns the model reads
(`RAW_COLUMNS`) and the category vocabularies are derived from it, so adding a field
here is the only change needed for it to flow through validation and encoding.
"""

from __future__ import annotations

import sys
import unicodedata
from datetime import date, datetime
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

InternetService = Literal["DSL", "Fiber", "None"]
Contract = Literal["Month-to-month", "One year", "Two year"]
PaymentMethod = Literal[
    "Electronic check",
    "Mailed check",
    "Bank transfer (automatic)",
    "Credit card (automatic)",
]
Gender = Literal["Female", "Male"]
RiskLevel = Literal["low", "medium", "high"]


UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""Unicode categories no customer id may contain: controls (C0, C1), format characters
(invisible ones such as U+200B and U+FEFF, bidirectional overrides such as U+202E),
surrogates, private use, unassigned code points, line and paragraph separators."""

PRINTABLE_ID_RULE = "printable_id"
_PRINTABLE_ID_MESSAGE = (
    "customer_id must be printable: no control, invisible or bidirectional-format, "
    "surrogate, private-use, unassigned or line-separator characters, and not only spaces"
)


@cache
def printable_id_pattern() -> str:
    """The rule as a regular expression, exact for this Python's Unicode database, for the
    OpenAPI schema (clients, and test generators such as schemathesis that hold the server
    to it): one class of every code point outside UNPRINTABLE_CATEGORIES (a class of what
    is allowed: generators draw from it ~6x faster than from the negated class), a
    look-ahead for "not only spaces", another against the final newline Python's `$` lets
    through. Valid in Python's `re` and in ECMA-262's Unicode mode (JSON Schema's dialect):
    code points of the basic plane as `\\uXXXX`, the others (no escape reads the same in
    both) as themselves."""
    allowed = [
        c.isprintable() or unicodedata.category(c) not in UNPRINTABLE_CATEGORIES
        for c in map(chr, range(sys.maxunicode + 1))
    ]
    spans: list[str] = []
    first: int | None = None
    for code_point, inside in enumerate([*allowed, False]):
        if inside and first is None:
            first = code_point
        elif not inside and first is not None:
            last = code_point - 1
            spans.append(_in_class(first) + (f"-{_in_class(last)}" if last > first else ""))
            first = None
    return rf"^(?!.*\n)(?!\s*$)[{''.join(spans)}]*$"


def _in_class(code_point: int) -> str:
    return f"\\u{code_point:04x}" if code_point <= 0xFFFF else chr(code_point)


def printable_problem(value: str) -> str | None:
    """Why `value` is not a printable id, or None. `str.isprintable` (C speed) settles
    almost every id; only ids with non-ASCII spaces (category Zs, allowed) take the loop."""
    if value.isspace():
        return "only spaces"
    if value.isprintable():
        return None
    for character in value:
        if unicodedata.category(character) in UNPRINTABLE_CATEGORIES:
            return f"U+{ord(character):04X} ({unicodedata.category(character)})"
    return None


def _printable_id(value: str) -> str:
    problem = printable_problem(value)
    if problem is not None:
        raise PydanticCustomError(PRINTABLE_ID_RULE, f"{_PRINTABLE_ID_MESSAGE}; found {problem}")
    return value


CustomerId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        description=(
            "1 to 128 printable characters, not all spaces: no character of Unicode "
            "categories Cc, Cf, Cs, Co, Cn, Zl or Zp."
        ),
        json_schema_extra=lambda schema: schema.update(pattern=printable_id_pattern()),
    ),
    AfterValidator(_printable_id),
]
"""A customer id, everywhere it is accepted (predictions, labels, deletion, label files).
Invisible, bidirectional and control characters are refused: ids travel in URLs
(`DELETE /customers/{id}`) and log lines, and two ids that look the same must be the same."""

MAX_COUNT = 100_000
"""Upper bound of event counts (support calls, late payments, billing issues): far above
any real customer, and keeps every value a 64-bit number for JSON and the database."""

MAX_EXTRAS = 100
"""Most members of a customer's `extra` object (a data profile's extra columns)."""


def _openapi30_exclusive_minimum(schema: dict[str, Any]) -> None:
    """BentoML publishes OpenAPI 3.0, where `exclusiveMinimum` is a flag on `minimum`
    (pydantic writes the 3.1 form); client generators and schemathesis reject the latter."""
    schema["minimum"], schema["exclusiveMinimum"] = schema.pop("exclusiveMinimum"), True


class CustomerData(BaseModel):
    """One customer as sent to `/predict` and as a row of a training table."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    customer_id: CustomerId
    tenure_months: int = Field(ge=0, le=1200)
    monthly_charges: float = Field(gt=0, json_schema_extra=_openapi30_exclusive_minimum)
    total_charges: float = Field(ge=0)
    internet_service: InternetService
    contract: Contract
    payment_method: PaymentMethod

    # Optional signals: may be missing in training tables and in requests. Age and
    # support calls were required in the original design; many real tables (IBM Telco
    # among them) do not have them, so they are optional with the same rules.
    age: int | None = Field(default=None, ge=18, le=100)
    support_calls: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    signup_date: date | None = None
    late_payments: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    billing_issues: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    phone_service: bool | None = None
    multiple_lines: bool | None = None
    online_security: bool | None = None
    online_backup: bool | None = None
    device_protection: bool | None = None
    tech_support: bool | None = None
    streaming_tv: bool | None = None
    streaming_movies: bool | None = None
    paperless_billing: bool | None = None
    data_usage_gb: float | None = Field(default=None, ge=0)
    phone_usage_minutes: float | None = Field(default=None, ge=0)
    gender: Gender | None = None
    senior_citizen: bool | None = None
    partner: bool | None = None
    dependents: bool | None = None

    # Inputs beyond this schema that a data profile added to the model (checked against
    # the served model's extra columns, not here).
    extra: dict[str, float | str] | None = Field(default=None, max_length=MAX_EXTRAS)


class ColumnKind(StrEnum):
    """How a raw column is encoded into the float matrix the pipeline works on."""

    NUMBER = "number"
    BOOLEAN = "boolean"
    CATEGORY = "category"
    DATE = "date"


def _kind_of(annotation: object) -> tuple[ColumnKind, tuple[str, ...]]:
    """Classify a field annotation; categories come with their vocabulary, in order."""
    if get_origin(annotation) is Literal:
        return ColumnKind.CATEGORY, tuple(get_args(annotation))
    inner = next(a for a in get_args(annotation) or (annotation,) if a is not type(None))
    if get_origin(inner) is Literal:
        return ColumnKind.CATEGORY, tuple(get_args(inner))
    if inner is bool:
        return ColumnKind.BOOLEAN, ()
    if inner is date:
        return ColumnKind.DATE, ()
    if inner in (int, float):
        return ColumnKind.NUMBER, ()
    raise TypeError(f"no encoding for field type {annotation!r}")


ID_COLUMN = "customer_id"
EXTRA_FIELD = "extra"
REQUIRED_COLUMNS: tuple[str, ...] = tuple(
    name for name, f in CustomerData.model_fields.items() if f.is_required()
)
RAW_COLUMNS: tuple[str, ...] = tuple(
    n for n in CustomerData.model_fields if n not in (ID_COLUMN, EXTRA_FIELD)
)
"""Model inputs, in the column order of the raw float matrix."""
COLUMN_KINDS: dict[str, ColumnKind] = {
    n: _kind_of(CustomerData.model_fields[n].annotation)[0] for n in RAW_COLUMNS
}
CATEGORIES: dict[str, tuple[str, ...]] = {
    n: _kind_of(CustomerData.model_fields[n].annotation)[1]
    for n in RAW_COLUMNS
    if COLUMN_KINDS[n] is ColumnKind.CATEGORY
}
"""Vocabulary of each categorical column; a value is encoded as its index here."""


class Reason(BaseModel):
    """A feature that moved this customer's score, with its log-odds contribution."""

    feature: str
    contribution: float


ModelArm = Literal["champion", "challenger"]
MODEL_ARMS: tuple[ModelArm, ...] = ("champion", "challenger")


class Prediction(BaseModel):
    """Answer to `/predict`, and one item of a batch answer."""

    customer_id: str
    churn_probability: float = Field(ge=0, le=1)
    will_churn: bool
    risk_level: RiskLevel
    recommendation: str
    top_reasons: list[Reason]
    model_version: str
    model_arm: ModelArm = "champion"
    """Which model of the experiment answered (README, "Champion and challenger")."""
    timestamp: datetime
    latency_ms: float


class BatchPrediction(BaseModel):
    """Answer to `/predict/batch`."""

    predictions: list[Prediction]
    total_processed: int
    high_risk_count: int
    processing_time_ms: float


def batch_envelope(
    predictions: list[dict[str, Any]], high_risk_count: int, processing_time_ms: float
) -> dict[str, Any]:
    """A `BatchPrediction` as the JSON-ready dict the gateway serialises (the rows are
    already `Prediction`-shaped; validating them again would cost more than scoring)."""
    return {
        "predictions": predictions,
        "total_processed": len(predictions),
        "high_risk_count": high_risk_count,
        "processing_time_ms": processing_time_ms,
    }


class Health(BaseModel):
    """Answer to `/health`."""

    status: Literal["healthy", "unhealthy"]
    model_loaded: bool
    model_version: str | None
    challenger_version: str | None = None
    """The challenger this worker serves to its share of customers (None: no experiment)."""
    challenger_share: float = 0.0
    uptime_seconds: float
    version: str
    detail: str | None = None
