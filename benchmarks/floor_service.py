"""The floor: a bare BentoML service that validates the `/predict` body and answers a constant.

    BENTOML_HOME=bentos .venv/bin/bentoml serve benchmarks.floor_service:FloorService

Same BentoML version, same input technique as `service.py` (`serving.api_specs.CustomerInput`:
the flat `CustomerData` body, validated by pydantic), same worker count (override
with ``BENTOML_CONFIG_OVERRIDES='{"services": {"floor_service": {"workers": N}}}'``),
metrics on, access log off. No model, no cache, no log, no auth: what is left is BentoML's
own per-request cost, which no service on this stack can undercut. `benchmarks/side_by_side.py`
measures it next to the product and the FastAPI peer.
"""

from __future__ import annotations

from typing import Any

import bentoml

from core.schema import CustomerData
from serving.api_specs import CustomerInput

ANSWER: dict[str, Any] = {
    "customer_id": "C1",
    "churn_probability": 0.5,
    "will_churn": False,
    "risk_level": "medium",
    "recommendation": "constant",
    "top_reasons": [],
    "model_version": "floor",
    "timestamp": "2026-01-01T00:00:00Z",
    "latency_ms": 0.0,
}


@bentoml.service(
    name="floor_service",
    traffic={"timeout": 30},
    workers=1,
    threads=1,
    metrics={"enabled": True},
    logging={"access": {"enabled": False}},
)
class FloorService:
    """Validate, then answer without doing anything."""

    @bentoml.api(route="/predict", input_spec=CustomerInput)
    async def predict(self, **customer: Any) -> dict[str, Any]:
        return ANSWER

    @bentoml.api(route="/predict/batch")
    async def predict_batch(self, customers: list[CustomerData], /) -> dict[str, Any]:
        return {
            "predictions": [ANSWER] * len(customers),
            "total_processed": len(customers),
            "high_risk_count": 0,
        }
