"""The real service (`bentoml serve` in a subprocess) under concurrency: 64 clients at once
are merged into adaptive batches, each answered with its own probability, and `/metrics`
shows it. What one request gets is tested in-process (test_app.py)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import numpy as np
import pytest

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

    metrics = httpx.get(f"{server}/metrics").text
    assert "bentoml_service_request_total" in metrics
    total, ones = batch_histogram(metrics)
    assert total >= 1
    assert total - ones > 0, "no adaptive batch larger than one request"
