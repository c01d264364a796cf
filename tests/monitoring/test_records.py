"""Logged rows are declared once: the record dataclasses are their tables' columns, and the
row values, the spool's lines and what is read back all follow from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import orjson
import pytest

from core.schema import ID_COLUMN, CustomerData
from monitoring.database import GROUND_TRUTH, PREDICTIONS
from monitoring.feedback import Label, LabelRow, decode_label_row, label_rows
from monitoring.journal import journal_payload
from monitoring.records import COLUMNS, PredictionRecord, decode_row, record_row
from monitoring.rows import RowCodec
from monitoring.spool import encode_rows

SECRET = b"test-secret-0123456789abcdef0123456789"
WHEN = datetime(2025, 3, 31, 12, 0, 0, 123456, tzinfo=UTC)
ANSWER = {
    "customer_id": "CUST-RAW-7",
    "churn_probability": 0.81,
    "will_churn": True,
    "risk_level": "high",
    "model_version": "churn_model:abc",
}


def test_the_predictions_table_has_exactly_the_records_fields() -> None:
    assert {f.name for f in fields(PredictionRecord)} == {c.name for c in PREDICTIONS.columns}
    assert tuple(c.name for c in PREDICTIONS.columns) == COLUMNS  # and in the table's order


def test_the_ground_truth_table_has_exactly_the_label_rows_fields() -> None:
    generated = {"id"}  # the table's own autoincrement key
    expected = {c.name for c in GROUND_TRUTH.columns} - generated
    assert {f.name for f in fields(LabelRow)} == expected


def test_a_record_that_is_not_its_table_is_refused_at_definition() -> None:
    @dataclass
    class Short:
        customer_hash: str
        churned: bool

    with pytest.raises(TypeError, match="are not the columns of table 'ground_truth'"):
        RowCodec(Short, GROUND_TRUTH)


def test_rows_hold_plain_python_values() -> None:
    """numpy scalars (the scoring path's) would not bind on psycopg."""
    record = PredictionRecord.from_answer(
        {**ANSWER, "churn_probability": np.float32(0.5), "will_churn": np.bool_(True)},
        request_id="r" * 100,
        customer_hash="h",
        features={"tenure_months": 3},
        latency_ms=np.float64(2.5),  # type: ignore[arg-type]
        cache="miss",
        endpoint="predict",
        default_model_version=None,
    )
    row = record_row(record)
    assert [type(row[name]) for name in ("churn_probability", "will_churn", "latency_ms")] == [
        float,
        bool,
        float,
    ]
    assert row["request_id"] == "r" * 64  # cut to the column, not refused
    assert row["model_version"] == "churn_model:abc"


def test_an_answer_without_a_version_is_logged_under_the_served_one() -> None:
    answer = {k: v for k, v in ANSWER.items() if k != "model_version"}
    record = PredictionRecord.from_answer(
        answer,
        request_id="r",
        customer_hash="h",
        features={},
        latency_ms=1.0,
        cache="hit",
        endpoint="predict",
        default_model_version="served:1",
    )
    assert record_row(record)["model_version"] == "served:1"


def _request_fields() -> dict[str, Any]:
    """A request's fields as the serving paths dump them (the id included)."""
    customer = CustomerData.model_validate(
        {
            "customer_id": "CUST-RAW-7",
            "tenure_months": 3,
            "monthly_charges": 70.0,
            "total_charges": 210.0,
            "internet_service": "Fiber",
            "contract": "Month-to-month",
            "payment_method": "Electronic check",
        }
    )
    return customer.model_dump(mode="json", exclude_none=True)


def _from_answer() -> PredictionRecord:
    return PredictionRecord.from_answer(
        ANSWER,
        request_id="r",
        customer_hash="h",
        features=_request_fields(),
        latency_ms=1.0,
        cache="miss",
        endpoint="predict",
        default_model_version=None,
    )


@pytest.mark.parametrize("path", ["constructor", "from_answer"])
def test_a_logged_row_never_holds_the_id_whichever_path_made_it(
    path: str, make_record: Callable[..., PredictionRecord]
) -> None:
    """Both serving paths hand the record the request's fields as dumped, id included."""
    if path == "constructor":
        record = make_record("CUST-RAW-7", features=_request_fields())
    else:
        record = _from_answer()
    assert ID_COLUMN not in record.features
    assert record.features["tenure_months"] == 3
    row = record_row(record)
    assert ID_COLUMN not in row["features"]
    for written in (journal_payload([record]), encode_rows([row])):  # journal, spool
        assert b"CUST-RAW-7" not in written
        assert b"tenure_months" in written


def test_spooled_rows_come_back_as_they_were_written() -> None:
    record = _from_answer()
    row = record_row(record)
    assert decode_row(orjson.loads(encode_rows([row]))) == row
    [label] = label_rows(
        [Label(customer_id="C1", churned=True, observed_date=date(2025, 3, 31))], SECRET, WHEN
    )
    assert decode_label_row(orjson.loads(encode_rows([label]))) == label


def test_spool_lines_of_earlier_versions_still_decode() -> None:
    """Lines exactly as the spool held them before the rows were derived from the records."""
    prediction = (
        b'{"id":"0123456789abcdef0123456789abcdef","request_id":"req-1","customer_hash":"h",'
        b'"model_version":"churn_model:abc","features":{"tenure_months":3},'
        b'"churn_probability":0.81,"will_churn":true,"risk_level":"high","latency_ms":2.5,'
        b'"cache":"miss","endpoint":"predict","created_at":"2025-03-31T12:00:00.123456+00:00"}'
    )
    assert decode_row(orjson.loads(prediction)) == {
        "id": "0123456789abcdef0123456789abcdef",
        "request_id": "req-1",
        "customer_hash": "h",
        "model_version": "churn_model:abc",
        "features": {"tenure_months": 3},
        "churn_probability": 0.81,
        "will_churn": True,
        "risk_level": "high",
        "latency_ms": 2.5,
        "cache": "miss",
        "endpoint": "predict",
        "created_at": WHEN,
        # columns added since (migration 0004) take their defaults
        "model_arm": "champion",
        "shadow_version": None,
        "shadow_probability": None,
    }
    label = (
        b'{"customer_hash":"h","churned":false,"observed_date":"2025-03-31",'
        b'"received_at":"2025-03-31T12:00:00.123456+00:00"}'
    )
    assert decode_label_row(orjson.loads(label)) == {
        "customer_hash": "h",
        "churned": False,
        "observed_date": date(2025, 3, 31),
        "received_at": WHEN,
    }
    with pytest.raises(KeyError):
        decode_label_row({"customer_hash": "h", "churned": True, "observed_date": "2025-03-31"})
