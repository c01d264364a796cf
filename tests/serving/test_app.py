"""The service's HTTP app in this process (no `bentoml serve`): answers, validation,
refusals, probes, and a service started without a model."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.schema import BatchPrediction, Prediction
from launchers.server_process import request_bodies
from tests.serving.conftest import AppWith
from tests.serving.inprocess import InProcessApp, metric
from training.train import TrainingOutcome


@pytest.fixture(scope="module")
def bodies(trained: TrainingOutcome) -> list[dict[str, Any]]:
    return request_bodies(trained.test_frame.iloc[:200])


def test_prediction_fields(
    app: InProcessApp, trained: TrainingOutcome, bodies: list[dict[str, Any]]
) -> None:
    answer = app.post("/predict", json=bodies[0])
    assert answer.status_code == 200
    body = answer.json()
    assert body["customer_id"] == bodies[0]["customer_id"]
    assert body["will_churn"] == (body["churn_probability"] >= trained.predictor.threshold)
    assert body["risk_level"] in {"low", "medium", "high"}
    assert body["recommendation"]
    assert len(body["top_reasons"]) == 3
    assert {r["feature"] for r in body["top_reasons"]} <= set(trained.predictor.feature_names)
    assert body["model_version"] == (trained.tag or "").split(":")[1]
    datetime.fromisoformat(body["timestamp"])
    assert body["latency_ms"] >= 0
    assert answer.headers["x-request-id"]


def test_a_lone_request_does_not_wait_for_a_batch(
    app: InProcessApp, trained: TrainingOutcome, bodies: list[dict[str, Any]]
) -> None:
    """One client at a time: scored at once, outside the batching queue, same answers."""
    before = metric("churn_adaptive_batch_size_count")
    answers = [app.post("/predict", json=body) for body in bodies[-20:]]
    assert [a.status_code for a in answers] == [200] * 20
    assert metric("churn_adaptive_batch_size_count") == before, (
        "a sequential request went through the batching queue"
    )
    served = np.array([a.json()["churn_probability"] for a in answers])
    expected = trained.predictor.predict_proba(trained.test_raw[len(bodies) - 20 : len(bodies)])
    np.testing.assert_allclose(served, expected, atol=1e-6)
    body = answers[0].json()
    assert set(body) == set(Prediction.model_fields)
    Prediction.model_validate(body)


def test_batch_endpoint(
    app: InProcessApp, bodies: list[dict[str, Any]], trained: TrainingOutcome
) -> None:
    answer = app.post("/predict/batch", json=bodies[:100])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert list(body) == list(BatchPrediction.model_fields)
    assert body["total_processed"] == 100
    served = np.array([p["churn_probability"] for p in body["predictions"]])
    np.testing.assert_allclose(
        served, trained.predictor.predict_proba(trained.test_raw[:100]), atol=1e-6
    )
    assert body["high_risk_count"] == sum(p["risk_level"] == "high" for p in body["predictions"])
    assert body["processing_time_ms"] > 0
    BatchPrediction.model_validate(body)
    # BentoML's clients send the same list as {"customers": [...]}: the same answer.
    wrapped = app.post("/predict/batch", json={"customers": bodies[:100]})
    assert wrapped.status_code == 200, wrapped.text
    assert [p["churn_probability"] for p in wrapped.json()["predictions"]] == list(served)


def test_oversize_batch_is_413(app: InProcessApp, bodies: list[dict[str, Any]]) -> None:
    answer = app.post("/predict/batch", json=[bodies[0]] * 1001)
    assert answer.status_code == 413
    assert "1000" in answer.json()["error"]


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"age": 17}, "age", "greater_than_equal"),
        ({"age": 101}, "age", "less_than_equal"),
        ({"monthly_charges": 0}, "monthly_charges", "greater_than"),
        ({"contract": "Weekly"}, "contract", "literal_error"),
        ({"unexpected": 1}, "unexpected", "extra_forbidden"),
        ({"customer_id": ""}, "customer_id", "string_too_short"),
    ],
)
def test_invalid_input_is_422_naming_field_and_rule(
    app: InProcessApp, bodies: list[dict[str, Any]], change: dict[str, Any], field: str, rule: str
) -> None:
    answer = app.post("/predict", json={**bodies[0], **change})
    assert answer.status_code == 422, answer.text
    assert answer.headers["x-request-id"], "a refused request can be traced too"
    body = answer.json()
    assert {"field": field, "rule": rule} in [
        {"field": d["field"], "rule": d["rule"]} for d in body["detail"]
    ]
    assert field in body["error"] and rule in body["error"]


def test_missing_required_field_is_422(app: InProcessApp, bodies: list[dict[str, Any]]) -> None:
    body = {k: v for k, v in bodies[0].items() if k != "tenure_months"}
    answer = app.post("/predict", json=body)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["field"] == "tenure_months"


def test_invalid_batch_item_names_its_position(
    app: InProcessApp, bodies: list[dict[str, Any]]
) -> None:
    answer = app.post("/predict/batch", json=[bodies[0], {**bodies[1], "age": 5}])
    assert answer.status_code == 422
    assert answer.headers["x-request-id"]
    assert answer.json()["detail"][0]["field"].endswith("[1].age")


def test_pickle_body_is_refused(app: InProcessApp) -> None:
    answer = app.post(
        "/predict",
        content=b"\x80\x04N.",
        headers={"Content-Type": "application/vnd.bentoml+pickle"},
    )
    assert answer.status_code == 415
    assert answer.json()["error"] == "content-type: only application/json is accepted"


def test_a_callers_request_id_is_echoed_and_an_unsafe_one_replaced(
    app: InProcessApp, bodies: list[dict[str, Any]]
) -> None:
    given = app.post("/predict", json=bodies[0], headers={"X-Request-ID": "trace-42.a:b"})
    assert given.headers["x-request-id"] == "trace-42.a:b"
    unsafe = app.post("/predict", json=bodies[0], headers={"X-Request-ID": "bad id/../x"})
    assert unsafe.status_code == 200
    assert unsafe.headers["x-request-id"] not in {"bad id/../x", ""}
    assert len(unsafe.headers["x-request-id"]) == 32, "a new uuid4 hex"


def test_health_and_probes(app: InProcessApp, trained: TrainingOutcome) -> None:
    health = app.get("/health").json()
    assert health["status"] == "healthy" and health["model_loaded"] is True
    assert health["model_version"] == (trained.tag or "").split(":")[1]
    assert app.get("/livez").status_code == 200
    assert app.get("/readyz").status_code == 200
    assert app.get("/docs.json").status_code == 200


def test_without_a_model_health_says_so_and_predict_is_503(
    app_with: AppWith, tmp_path: Path, bodies: list[dict[str, Any]]
) -> None:
    empty = tmp_path / "empty-bentoml-home"
    (empty / "models").mkdir(parents=True)
    app = app_with(home=empty)
    health = app.get("/health").json()
    assert health["model_loaded"] is False and health["status"] == "unhealthy"
    assert "churn train" in health["detail"]
    # Up (alive) but not ready: a load balancer must send it no scoring traffic.
    assert app.get("/livez").status_code == 200
    assert app.get("/readyz").status_code == 503
    answer = app.post("/predict", json=bodies[0])
    assert answer.status_code == 503
    assert "churn train" in answer.json()["error"]
    answer = app.post("/predict/batch", json=bodies[:2])
    assert answer.status_code == 503
