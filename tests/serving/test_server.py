"""The real service: `bentoml serve` in a subprocess, called over HTTP."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Any

import httpx
import numpy as np
import pytest

from core.schema import BatchPrediction, Prediction
from launchers.server_process import request_bodies
from training.train import TrainingOutcome

CLIENTS = 64
ROUNDS = 4


@pytest.fixture(scope="module")
def bodies(trained: TrainingOutcome) -> list[dict[str, Any]]:
    return request_bodies(trained.test_frame.iloc[: CLIENTS * ROUNDS])


async def post_concurrently(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(bodies)):
            queue.put_nowait(i)
        answers: list[httpx.Response | None] = [None] * len(bodies)

        async def client_loop() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                answers[i] = await client.post("/predict", json=bodies[i])

        await asyncio.gather(*(client_loop() for _ in range(CLIENTS)))
        return [a for a in answers if a is not None]


def batch_histogram(metrics_text: str) -> tuple[float, float]:
    """(observations, observations of size 1) of churn_adaptive_batch_size."""
    total = ones = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith("churn_adaptive_batch_size"):
            continue
        value = float(line.rsplit(" ", 1)[1])
        if line.startswith("churn_adaptive_batch_size_count"):
            total += value
        elif re.search(r'le="1(\.0)?"', line):
            ones += value
    return total, ones


@pytest.mark.server
def test_64_concurrent_clients_all_answered_with_training_probabilities(
    server: str, trained: TrainingOutcome, bodies: list[dict[str, Any]]
) -> None:
    answers = asyncio.run(post_concurrently(server, bodies))
    assert [a.status_code for a in answers] == [200] * len(bodies), answers[0].text
    served = np.array([a.json()["churn_probability"] for a in answers])
    expected = trained.predictor.predict_proba(trained.test_raw[: len(bodies)])
    np.testing.assert_allclose(served, expected, atol=1e-6)

    total, ones = batch_histogram(httpx.get(f"{server}/metrics").text)
    assert total >= 1
    assert total - ones > 0, "no adaptive batch larger than one request"


@pytest.mark.server
def test_prediction_fields(
    server: str, trained: TrainingOutcome, bodies: list[dict[str, Any]]
) -> None:
    answer = httpx.post(f"{server}/predict", json=bodies[0], timeout=30)
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


@pytest.mark.server
def test_a_lone_request_does_not_wait_for_a_batch(
    server: str, trained: TrainingOutcome, bodies: list[dict[str, Any]]
) -> None:
    """One client at a time: scored at once, outside the batching queue, same answers."""
    before, _ = batch_histogram(httpx.get(f"{server}/metrics").text)
    with httpx.Client(base_url=server, timeout=30) as client:
        answers = [client.post("/predict", json=body) for body in bodies[-20:]]
    after, _ = batch_histogram(httpx.get(f"{server}/metrics").text)
    assert [a.status_code for a in answers] == [200] * 20
    assert after == before, "a sequential request went through the batching queue"
    served = np.array([a.json()["churn_probability"] for a in answers])
    expected = trained.predictor.predict_proba(trained.test_raw[len(bodies) - 20 : len(bodies)])
    np.testing.assert_allclose(served, expected, atol=1e-6)
    body = answers[0].json()
    assert set(body) == set(Prediction.model_fields)
    Prediction.model_validate(body)


@pytest.mark.server
def test_batch_endpoint(
    server: str, bodies: list[dict[str, Any]], trained: TrainingOutcome
) -> None:
    answer = httpx.post(f"{server}/predict/batch", json=bodies[:100], timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert list(body) == list(BatchPrediction.model_fields)
    BatchPrediction.model_validate(body)
    assert body["total_processed"] == 100
    served = np.array([p["churn_probability"] for p in body["predictions"]])
    np.testing.assert_allclose(
        served, trained.predictor.predict_proba(trained.test_raw[:100]), atol=1e-6
    )
    assert body["high_risk_count"] == sum(p["risk_level"] == "high" for p in body["predictions"])
    assert body["processing_time_ms"] > 0


@pytest.mark.server
def test_oversize_batch_is_413(server: str, bodies: list[dict[str, Any]]) -> None:
    answer = httpx.post(f"{server}/predict/batch", json=[bodies[0]] * 1001, timeout=60)
    assert answer.status_code == 413
    assert "1000" in answer.json()["error"]


@pytest.mark.server
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
    server: str, bodies: list[dict[str, Any]], change: dict[str, Any], field: str, rule: str
) -> None:
    answer = httpx.post(f"{server}/predict", json={**bodies[0], **change}, timeout=30)
    assert answer.status_code == 422, answer.text
    assert answer.headers["x-request-id"], "a refused request can be traced too"
    body = answer.json()
    assert {"field": field, "rule": rule} in [
        {"field": d["field"], "rule": d["rule"]} for d in body["detail"]
    ]
    assert field in body["error"] and rule in body["error"]


@pytest.mark.server
def test_missing_required_field_is_422(server: str, bodies: list[dict[str, Any]]) -> None:
    body = {k: v for k, v in bodies[0].items() if k != "tenure_months"}
    answer = httpx.post(f"{server}/predict", json=body, timeout=30)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["field"] == "tenure_months"


@pytest.mark.server
def test_invalid_batch_item_names_its_position(server: str, bodies: list[dict[str, Any]]) -> None:
    answer = httpx.post(
        f"{server}/predict/batch", json=[bodies[0], {**bodies[1], "age": 5}], timeout=30
    )
    assert answer.status_code == 422
    assert answer.headers["x-request-id"]
    assert answer.json()["detail"][0]["field"].endswith("[1].age")


@pytest.mark.server
def test_pickle_body_is_refused(server: str) -> None:
    answer = httpx.post(
        f"{server}/predict",
        content=b"\x80\x04N.",
        headers={"Content-Type": "application/vnd.bentoml+pickle"},
        timeout=30,
    )
    assert 400 <= answer.status_code < 500


@pytest.mark.server
def test_health_and_probes(server: str, trained: TrainingOutcome) -> None:
    health = httpx.get(f"{server}/health", timeout=10).json()
    assert health["status"] == "healthy" and health["model_loaded"] is True
    assert health["model_version"] == (trained.tag or "").split(":")[1]
    assert httpx.get(f"{server}/livez").status_code == 200
    assert httpx.get(f"{server}/readyz").status_code == 200
    assert "bentoml_service_request_total" in httpx.get(f"{server}/metrics").text
    assert httpx.get(f"{server}/docs.json").status_code == 200


@pytest.mark.server
def test_without_a_model_health_says_so_and_predict_is_503(
    server_without_model: str, bodies: list[dict[str, Any]]
) -> None:
    health = httpx.get(f"{server_without_model}/health", timeout=10).json()
    assert health["model_loaded"] is False and health["status"] == "unhealthy"
    assert "churn train" in health["detail"]
    # Up (alive) but not ready: a load balancer must send it no scoring traffic.
    assert httpx.get(f"{server_without_model}/livez").status_code == 200
    assert httpx.get(f"{server_without_model}/readyz").status_code == 503
    answer = httpx.post(f"{server_without_model}/predict", json=bodies[0], timeout=30)
    assert answer.status_code == 503
    assert "churn train" in answer.json()["error"]
    answer = httpx.post(f"{server_without_model}/predict/batch", json=bodies[:2], timeout=30)
    assert answer.status_code == 503
