"""Scoring in-process: the vectorised batch answer and BentoML's dispatcher in front of it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter

from core.schema import CustomerData, Prediction
from core.settings import Settings
from launchers.server_process import request_bodies
from serving.batcher import PredictBatcher
from serving.scoring import (
    RISK_LEVELS,
    LoadedModel,
    answer_rows,
    answer_timestamp,
    recommendation,
    risk_levels,
    score_batch,
)
from training.train import TrainingOutcome


@pytest.fixture(scope="module")
def model(trained: TrainingOutcome) -> LoadedModel:
    return LoadedModel(trained.predictor, "test-version", "test-checksum")


@pytest.fixture(scope="module")
def customers(trained: TrainingOutcome) -> list[CustomerData]:
    bodies = request_bodies(trained.test_frame.iloc[:200])
    return [CustomerData.model_validate(body) for body in bodies]


def test_rows_are_predictions_in_request_order(
    model: LoadedModel, customers: list[CustomerData], trained: TrainingOutcome
) -> None:
    settings = Settings()
    rows = score_batch(model, customers, settings).rows()
    predictions = [Prediction.model_validate(row) for row in rows]
    assert [p.customer_id for p in predictions] == [c.customer_id for c in customers]
    probability = np.array([p.churn_probability for p in predictions])
    np.testing.assert_allclose(
        probability, trained.predictor.predict_proba(trained.test_raw[:200]), atol=1e-6
    )
    assert [p.will_churn for p in predictions] == list(probability >= trained.predictor.threshold)
    levels = [
        RISK_LEVELS[i] for i in risk_levels(probability, settings, trained.predictor.threshold)
    ]
    assert [p.risk_level for p in predictions] == levels
    assert {p.model_version for p in predictions} == {"test-version"}
    assert all(p.timestamp.tzinfo is not None for p in predictions)


def test_rows_are_exactly_what_pydantic_writes_for_a_prediction(
    model: LoadedModel, customers: list[CustomerData]
) -> None:
    """The rows skip validation for speed; pydantic would write each one the same, keys in
    `Prediction`'s order, the timestamp in its format."""
    rows = score_batch(model, customers[:20], Settings()).rows()
    for row in rows:
        assert list(row) == list(Prediction.model_fields)
        assert Prediction.model_validate(row).model_dump(mode="json") == row
    assert rows[0]["timestamp"].endswith("Z")


def test_the_timestamp_is_pydantics_format() -> None:
    for moment in (
        datetime(2025, 3, 31, 12, 0, tzinfo=UTC),
        datetime(2025, 3, 31, 12, 0, 0, 500, tzinfo=UTC),
        datetime(2025, 3, 31, 14, 0, tzinfo=timezone(timedelta(hours=2))),
    ):
        utc = moment.astimezone(UTC)
        assert answer_timestamp(moment) == TypeAdapter(datetime).dump_python(utc, mode="json")
    assert answer_timestamp(datetime(2025, 3, 31, 12, 0, tzinfo=UTC)) == "2025-03-31T12:00:00Z"


def test_answer_rows_need_a_column_for_each_prediction_field_and_no_other() -> None:
    names = list(Prediction.model_fields)
    per_customer: dict[str, list[Any]] = {name: [1, 2] for name in names[:5]}
    shared = {name: name for name in names[5:]}
    rows = answer_rows(per_customer, shared)
    assert [list(row) for row in rows] == [names, names]
    assert [row[names[0]] for row in rows] == [1, 2] and rows[1][names[-1]] == names[-1]
    bad = [
        ({**per_customer, "extra": [1, 2]}, shared),
        (per_customer, {k: v for k, v in shared.items() if k != names[-1]}),
        ({**per_customer, names[-1]: [1, 2]}, shared),  # named twice
        ({**per_customer, names[0]: [1]}, shared),  # one row short
    ]
    for columns, constants in bad:
        with pytest.raises(ValueError, match="answer columns"):
            answer_rows(columns, constants)


def test_reasons_and_advice_match_the_per_row_rules(
    model: LoadedModel, customers: list[CustomerData]
) -> None:
    rows = score_batch(model, customers, Settings(top_reasons=4)).rows()
    names = set(model.predictor.feature_names)
    for row in rows:
        reasons = row["top_reasons"]
        assert len(reasons) == 4 and {r["feature"] for r in reasons} <= names
        sizes = [abs(r["contribution"]) for r in reasons]
        assert sizes == sorted(sizes, reverse=True)
        raising = next((r["feature"] for r in reasons if r["contribution"] > 0), None)
        assert row["recommendation"] == recommendation(row["risk_level"], raising)
    assert len({row["recommendation"] for row in rows}) > 1


def test_no_reasons_asked_gives_base_advice(
    model: LoadedModel, customers: list[CustomerData]
) -> None:
    rows = score_batch(model, customers[:5], Settings(top_reasons=0)).rows()
    assert all(row["top_reasons"] == [] for row in rows)
    assert [row["recommendation"] for row in rows] == [
        recommendation(row["risk_level"], None) for row in rows
    ]


def test_batcher_merges_concurrent_requests_and_answers_each_its_own(
    model: LoadedModel, customers: list[CustomerData]
) -> None:
    settings = Settings()
    sizes: list[int] = []

    def score_rows(batch: Any) -> list[dict[str, Any]]:
        sizes.append(len(batch))
        return score_batch(model, batch, settings).rows()

    async def many() -> list[dict[str, Any]]:
        batcher = PredictBatcher(score_rows, max_batch_size=64, max_latency_ms=10_000)
        try:
            return await asyncio.gather(*(batcher.score(c) for c in customers))
        finally:
            batcher.close()

    rows = asyncio.run(many())
    assert [r["customer_id"] for r in rows] == [c.customer_id for c in customers]
    alone = score_batch(model, customers, settings).rows()
    np.testing.assert_allclose(
        [r["churn_probability"] for r in rows], [r["churn_probability"] for r in alone]
    )
    assert sum(sizes) == len(customers)
    assert max(sizes) > 1, "no batch merged more than one request"
    assert max(sizes) <= 64
