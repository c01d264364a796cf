"""Bounded cost per request (issue 13, points 5 and 8): the body's shape measured before
validation, capped error lists, the fail-fast walk over an invalid array, the body-read
timeout. The same limits against the real service: tests/serving/test_bounded_cost.py."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import pytest
from pydantic import Field, TypeAdapter
from starlette.types import Message

from monitoring.feedback import Label
from serving.body import (
    MAX_NESTED_MEMBERS,
    SCAN_FROM_BYTES,
    BodyTimeout,
    BodyTooLarge,
    Shape,
    measure,
    read_body,
    shape_problem,
)
from serving.errors import MAX_ERROR_DETAILS, invalid_fields, list_problems, validation_body


@pytest.mark.parametrize(
    ("body", "shape"),
    [
        ("[]", Shape(0, 0)),
        (" [ ] ", Shape(0, 0)),
        ("{}", Shape(0, 0)),
        ("[1]", Shape(1, 0)),
        ("[1, 2, 3]", Shape(3, 0)),
        ('{"a": 1, "b": [1, 2, 3, 4]}', Shape(2, 4)),
        ('[{"a": 1, "b": 2}, {"c": "x,y,[z]{"}]', Shape(2, 2)),
        ('[{"a": "said \\"hi, [there]\\"", "b": "\\\\", "c": 1}]', Shape(1, 3)),
        ('[{"extra": {"a": 1, "b": 2, "c": 3}}, {"d": 1, "e": 2}]', Shape(2, 3)),
        ('"a, [string]"', Shape(None, 0)),
        ("12", Shape(None, 0)),
    ],
)
def test_measure_counts_members_outside_strings(body: str, shape: Shape) -> None:
    assert measure(body.encode()) == shape


def test_measure_matches_a_parser_on_generated_documents() -> None:
    rows = [
        {"id": f"c{i},[{{", "extra": {f"k{j}": j for j in range(i % 7)}, "v": [1] * (i % 5)}
        for i in range(300)
    ]
    shape = measure(json.dumps(rows, indent=1).encode())
    assert shape.top_items == len(rows)
    assert shape.largest_nested == max(max(len(r), len(r["extra"]), len(r["v"])) for r in rows)


def test_a_long_array_is_refused_by_its_count_not_its_items() -> None:
    body = b"[" + b",".join([b"1"] * 1_900_000) + b"]"
    assert shape_problem(body, "customers", 1000) == (
        "customers: at most 1000 per request, got 1900000"
    )
    assert shape_problem(b"[" + b",".join([b"{}"] * 1000) + b"]", "customers", 1000) is None


def test_the_customers_envelope_is_limited_like_the_bare_array() -> None:
    """`{"customers": [...]}` (what BentoML's clients send) takes up to 1,000 customers
    too, not the 100 members allowed to any nested array."""
    customers = b",".join([b'{"customer_id": "a"}'] * 1000)
    assert shape_problem(b'{"customers": [' + customers + b"]}", "customers", 1000) is None
    too_many = b'{ "customers" : [' + customers + b',{"customer_id": "b"}] }\n'
    assert shape_problem(too_many, "customers", 1000) == (
        "customers: at most 1000 per request, got 1001"
    )
    # Another member after the array: its containers still count, nothing slips through.
    smuggled = b'{"customers": [{}], "x": [' + b",".join([b"1"] * 5000) + b"]}"
    assert shape_problem(smuggled, "customers", 1000) is not None


def test_a_nested_container_larger_than_any_valid_one_is_refused() -> None:
    members = ",".join(f'"x{i}": 0' for i in range(MAX_NESTED_MEMBERS + 1))
    nested = f'[{{"customer_id": "a", "extra": {{{members}}}}}]'.encode()
    assert "at most 100" in (shape_problem(nested, "customers", 1000) or "")
    flat = f'{{"customer_id": "a", {members}}}'.encode() + b" " * SCAN_FROM_BYTES
    assert "an object has 102 members" in (shape_problem(flat, "body", None) or "")
    fitting = ",".join(f'"x{i}": 0' for i in range(MAX_NESTED_MEMBERS))
    assert shape_problem(f'[{{"extra": {{{fitting}}}}}]'.encode(), "customers", 1000) is None


def test_a_small_single_object_is_not_measured() -> None:
    members = ",".join(f'"x{i}": 0' for i in range(MAX_NESTED_MEMBERS + 1))
    body = f"{{{members}}}".encode()
    assert len(body) < SCAN_FROM_BYTES
    assert shape_problem(body, "body", None) is None  # validation finds it, cheaply


def problems(n: int) -> list[dict[str, str]]:
    return [{"field": f"[{i}].age", "rule": "greater_than_equal", "message": "m"} for i in range(n)]


def test_validation_body_lists_twenty_and_counts_the_rest() -> None:
    body = validation_body(problems(57), unchecked=440)
    assert len(body["detail"]) == MAX_ERROR_DETAILS == 20
    assert body["truncated"] == 37 and body["unchecked"] == 440
    assert "37 more problems not listed" in body["error"]
    assert "440 items" in body["error"]
    assert body["error"].count("greater_than_equal") == 20
    assert "truncated" not in validation_body(problems(3))


def test_invalid_fields_caps_the_log_line() -> None:
    line = invalid_fields([{"loc": (i, "age")} for i in range(5000)])
    assert line.endswith("[19].age and 4980 more problems")
    assert len(line) < 400


good = {"customer_id": "a", "churned": True, "observed_date": "2026-11-01"}
bad = {"customer_id": "", "churned": "maybe", "observed_date": "never"}
fail_fast = TypeAdapter(Annotated[list[Label], Field(fail_fast=True)])


def test_list_problems_resumes_after_each_invalid_item_until_the_cap() -> None:
    items: list[Any] = [good, bad, good, good, bad] + [bad] * 100
    found = list_problems(fail_fast, items)
    indices = sorted({e["loc"][0] for e in found.errors})
    assert indices == [1, 4, 5, 6, 7, 8, 9]  # 3 problems each: 21 ≥ 20 after [9]
    assert found.unchecked == len(items) - 10
    assert all(e["type"] for e in found.errors)


def test_list_problems_of_an_array_with_few_invalid_items_finds_them_all() -> None:
    found = list_problems(fail_fast, [good, bad, good, bad, good])
    assert sorted({e["loc"][0] for e in found.errors}) == [1, 3]
    assert found.unchecked == 0
    assert list_problems(fail_fast, [good, good]).errors == []


def receiving(*messages: Message, then_wait: bool = False) -> Any:
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if then_wait:
            await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    return receive


@pytest.mark.anyio
async def test_read_body_gives_up_on_a_body_that_never_finishes() -> None:
    part = {"type": "http.request", "body": b"[1,", "more_body": True}
    with pytest.raises(BodyTimeout):
        await read_body(b"100", receiving(part, then_wait=True), 1000, 0.05)


@pytest.mark.anyio
async def test_read_body_joins_chunks_and_refuses_oversize() -> None:
    parts = [{"type": "http.request", "body": b"[1,", "more_body": True}]
    parts.append({"type": "http.request", "body": b"2]", "more_body": False})
    assert await read_body(None, receiving(*parts), 1000, 5.0) == b"[1,2]"
    with pytest.raises(BodyTooLarge):
        await read_body(b"5000", receiving(*parts), 1000, 5.0)
    with pytest.raises(BodyTooLarge):
        await read_body(None, receiving(*parts), 4, 5.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
