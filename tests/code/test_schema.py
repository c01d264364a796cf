"""CustomerData: every rule has an example that breaks it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from core.schema import (
    CATEGORIES,
    COLUMN_KINDS,
    RAW_COLUMNS,
    REQUIRED_COLUMNS,
    BatchPrediction,
    ColumnKind,
    CustomerData,
    batch_envelope,
)

VALID: dict[str, Any] = {
    "customer_id": "CUST12345",
    "age": 42,
    "tenure_months": 24,
    "monthly_charges": 89.99,
    "total_charges": 2159.76,
    "support_calls": 3,
    "internet_service": "Fiber",
    "contract": "Month-to-month",
    "payment_method": "Electronic check",
}


def errors_for(**change: Any) -> list[tuple[str, str]]:
    """(field, rule) of every error when `VALID` is changed by `change`."""
    with pytest.raises(ValidationError) as caught:
        CustomerData(**{**VALID, **change})
    return [(".".join(map(str, e["loc"])), e["type"]) for e in caught.value.errors()]


def test_the_design_example_is_valid() -> None:
    customer = CustomerData(**VALID)
    assert customer.signup_date is None and customer.tech_support is None


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"customer_id": ""}, "customer_id", "string_too_short"),
        ({"customer_id": "   "}, "customer_id", "printable_id"),
        ({"customer_id": "x" * 129}, "customer_id", "string_too_long"),
        ({"age": 17}, "age", "greater_than_equal"),
        ({"extra": {"nps": [1]}}, "extra.nps.float", "float_type"),
        ({"age": 101}, "age", "less_than_equal"),
        ({"age": 42.5}, "age", "int_from_float"),
        ({"tenure_months": -1}, "tenure_months", "greater_than_equal"),
        ({"monthly_charges": 0}, "monthly_charges", "greater_than"),
        ({"monthly_charges": float("nan")}, "monthly_charges", "finite_number"),
        ({"total_charges": -0.01}, "total_charges", "greater_than_equal"),
        ({"support_calls": -1}, "support_calls", "greater_than_equal"),
        ({"internet_service": "Cable"}, "internet_service", "literal_error"),
        ({"contract": "Weekly"}, "contract", "literal_error"),
        ({"payment_method": "Cash"}, "payment_method", "literal_error"),
        ({"late_payments": -1}, "late_payments", "greater_than_equal"),
        ({"billing_issues": -2}, "billing_issues", "greater_than_equal"),
        ({"data_usage_gb": -1.0}, "data_usage_gb", "greater_than_equal"),
        ({"phone_usage_minutes": -5}, "phone_usage_minutes", "greater_than_equal"),
        ({"gender": "X"}, "gender", "literal_error"),
        ({"tech_support": "maybe"}, "tech_support", "bool_parsing"),
        ({"signup_date": "not a date"}, "signup_date", "date_from_datetime_parsing"),
        ({"loyalty_card": True}, "loyalty_card", "extra_forbidden"),
    ],
)
def test_each_rule_has_a_failing_example(change: dict[str, Any], field: str, rule: str) -> None:
    assert (field, rule) in errors_for(**change)


@pytest.mark.parametrize(
    "customer_id",
    [
        "\u200b",  # zero-width space only
        "\ufeff",  # byte-order mark only
        "\u200b\ufeff\u2060",  # only invisible characters
        "CUST\u200b1",  # an invisible character inside
        "CUST\u202e1",  # right-to-left override
        "\u2066CUST1\u2069",  # bidirectional isolates
        "CUST\u0085",  # C1 control (next line)
        "CUST\u009b1",  # C1 control (CSI)
        "CUST\x1b[31m",  # C0 control (ANSI escape)
        "CUST\u2028",  # line separator
        "CUST\ue000",  # private use
        "CUST\u0378",  # unassigned
        "\u3000\u00a0",  # only (non-ASCII) spaces
    ],
)
def test_unprintable_customer_ids_are_refused(customer_id: str) -> None:
    assert errors_for(customer_id=customer_id) == [("customer_id", "printable_id")]


@pytest.mark.parametrize("customer_id", ["CUST12345", "Zoë-42", "ACME\u00a0Corp", "客户-7", " A "])
def test_printable_customer_ids_are_accepted(customer_id: str) -> None:
    assert CustomerData(**{**VALID, "customer_id": customer_id}).customer_id == customer_id


def test_the_published_pattern_refuses_the_listed_invisible_characters() -> None:
    """The OpenAPI pattern (for generators) agrees with the rule on the usual offenders."""
    pattern = re.compile(CustomerData.model_json_schema()["properties"]["customer_id"]["pattern"])
    for bad in ("\u200b", "A\u202eB", "A\u0085", "A\ufeff", "   "):
        assert not pattern.match(bad), repr(bad)
    assert pattern.match("CUST12345")


@pytest.mark.parametrize("field", REQUIRED_COLUMNS)
def test_required_fields_are_required(field: str) -> None:
    body = {k: v for k, v in VALID.items() if k != field}
    with pytest.raises(ValidationError) as caught:
        CustomerData(**body)
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [((field,), "missing")]


def test_optional_fields_accept_values_and_none() -> None:
    customer = CustomerData(
        **VALID, signup_date="2024-05-01", tech_support=True, gender="Female", data_usage_gb=None
    )
    assert customer.signup_date is not None and customer.signup_date.year == 2024
    assert customer.tech_support is True and customer.data_usage_gb is None


def test_derived_column_lists_follow_the_model() -> None:
    assert "customer_id" not in RAW_COLUMNS
    assert set(RAW_COLUMNS) | {"customer_id", "extra"} == set(CustomerData.model_fields)
    assert CATEGORIES["contract"] == ("Month-to-month", "One year", "Two year")
    assert COLUMN_KINDS["signup_date"] is ColumnKind.DATE
    assert COLUMN_KINDS["partner"] is ColumnKind.BOOLEAN


def test_the_batch_envelope_is_a_batch_prediction() -> None:
    row = {
        "customer_id": "C1",
        "churn_probability": 0.9,
        "will_churn": True,
        "risk_level": "high",
        "recommendation": "Call.",
        "top_reasons": [{"feature": "tenure_months", "contribution": 0.4}],
        "model_version": "v",
        "model_arm": "challenger",
        "timestamp": "2025-03-31T12:00:00Z",
        "latency_ms": 1.0,
    }
    envelope = batch_envelope([row, row], 2, 3.5)
    assert list(envelope) == list(BatchPrediction.model_fields)
    assert BatchPrediction.model_validate(envelope).model_dump(mode="json") == envelope
    assert envelope["total_processed"] == 2
    assert batch_envelope([], 0, 0.1)["total_processed"] == 0
