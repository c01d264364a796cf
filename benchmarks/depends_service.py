"""The rejected topology, kept for measurement: a gateway service calling a separate
model service through `bentoml.depends`, the model service's `score` being batchable.

    BENTOML_HOME=bentos .venv/bin/python benchmarks/serve_load.py \
        --service benchmarks.depends_service:Gateway

Same model, same scoring code as `service.py`; only the process layout differs.
"""

from __future__ import annotations

from pathlib import Path

import bentoml

from core.pipeline.store import stored_predictor
from core.schema import CustomerData, Prediction
from core.settings import MODEL_NAME, get_settings
from serving.scoring import LoadedModel, score_batch

settings = get_settings()


@bentoml.service(workers=1, threads=1)
class Scorer:
    model_ref = bentoml.models.BentoModel(f"{MODEL_NAME}:latest")

    def __init__(self) -> None:
        stored = self.model_ref
        loaded = stored_predictor(Path(stored.path), str(stored.tag.version))  # type: ignore[attr-defined]
        self.model = LoadedModel(loaded.predictor, loaded.version, loaded.checksum)

    @bentoml.api(
        batchable=True,
        max_batch_size=settings.max_batch_size,
        max_latency_ms=settings.max_latency_ms,
    )
    def score(self, customers: list[CustomerData]) -> list[Prediction]:
        rows = score_batch(self.model, customers, settings).rows()
        return [Prediction.model_validate(row) for row in rows]


@bentoml.service(workers=1)
class Gateway:
    scorer = bentoml.depends(Scorer)

    @bentoml.api(route="/predict")
    async def predict(self, customer: CustomerData, /) -> Prediction:
        predictions = await self.scorer.to_async.score([customer])
        return predictions[0]
