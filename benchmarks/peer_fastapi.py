"""The peer: the original design's serving path (shared/seed/ARCHITECTURE.md), for comparison.

    BENTOML_HOME=bentos PEER_DATABASE_URL=sqlite:////tmp/peer.db \\
        .venv/bin/python -m uvicorn benchmarks.peer_fastapi:app --workers 1 --no-access-log

A FastAPI app run by uvicorn, built the way the design draws its prediction flow, one
request at a time:

1. pydantic validates the body (`CustomerData`, the same schema as the product);
2. the API key is checked (`APIKeyHeader`, the design's security snippet) when
   ``PEER_API_KEYS`` is set;
3. Redis is asked for a cached answer keyed by ``customer_id`` (5 min TTL) when
   ``PEER_REDIS_URL`` is set (sync client, as the design's ``redis`` dependency);
4. per-request pandas: a one-row ``pd.DataFrame`` is built from the request and run through
   the model's own transforms (typed table → raw matrix, cleaner, features), the result
   checked for inf as a DataFrame (the design's "feature validation");
5. an ``xgboost.XGBClassifier`` around the stored booster answers ``predict_proba`` on a
   one-row DataFrame; the stored blend weight, linear model and calibration are applied so
   the probability is the product's to float precision;
6. risk level and recommendation; Prometheus counters;
7. a synchronous SQLAlchemy insert and commit into the prediction table, per request, on
   one shared SQLite connection behind a lock (the design's shared connection;
   ``PEER_DATABASE_URL`` must be a SQLite URL);
8. the answer is cached in Redis and returned (FastAPI validates it as `PredictionResponse`).

`/predict/batch` does the same for each customer in a Python loop, as the design's
per-request code would. Same stored model as the product (``churn_model:latest`` in
``BENTOML_HOME``). The design returns no ``top_reasons``, so neither does the peer: the
product's per-row SHAP contributions are extra work the peer does not do.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import numpy as np
import pandas as pd
import xgboost as xgb
from fastapi import Depends, FastAPI, HTTPException, Response
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

from core.pipeline.encode import encode_frame
from core.pipeline.store import BOOSTER_FILE, load_predictor
from core.schema import CustomerData, RiskLevel
from core.settings import MAX_BATCH_CUSTOMERS, get_settings
from serving.scoring import RECOMMENDATIONS, RISK_LEVELS

settings = get_settings()
CACHE_TTL_SECONDS = 300

# Model: loaded once per worker at import, as the design's app does at start-up.
stored = load_predictor()
predictor = stored.predictor
classifier = xgb.XGBClassifier(n_jobs=1)
classifier.load_model(stored.path / BOOSTER_FILE)
FEATURE_NAMES = list(predictor.feature_names)

# Prediction log: one shared SQLite connection (StaticPool), serialised by a lock.
metadata = MetaData()
predictions_table = Table(
    "predictions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("customer_id_hash", String(64), nullable=False),
    Column("churn_probability", Float, nullable=False),
    Column("will_churn", Boolean, nullable=False),
    Column("risk_level", String(8), nullable=False),
    Column("features", Text, nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
database_url = os.environ.get("PEER_DATABASE_URL", "sqlite:///peer_predictions.db")
engine = create_engine(
    database_url,
    connect_args={"check_same_thread": False, "timeout": 60},
    poolclass=StaticPool,
)
with contextlib.suppress(OperationalError):  # another worker may create it at the same time
    metadata.create_all(engine)
db_lock = threading.Lock()

redis_client: Any = None
if os.environ.get("PEER_REDIS_URL"):
    import redis

    redis_client = redis.Redis.from_url(os.environ["PEER_REDIS_URL"])

valid_api_keys = {k for k in os.environ.get("PEER_API_KEYS", "").split(",") if k}
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)

PREDICTIONS = Counter("peer_predictions", "Predictions served", ["risk_level"])
LATENCY = Histogram("peer_prediction_latency_seconds", "Prediction latency")


class PredictionResponse(BaseModel):
    """The design's answer (no top_reasons)."""

    customer_id: str
    churn_probability: float = Field(ge=0, le=1)
    will_churn: bool
    risk_level: RiskLevel
    recommendation: str
    model_version: str
    timestamp: datetime
    latency_ms: float


class BatchPredictionResponse(BaseModel):
    predictions: list[PredictionResponse]
    total_processed: int
    high_risk_count: int
    processing_time_ms: float


def check_api_key(api_key: Annotated[str | None, Depends(api_key_header)]) -> None:
    if valid_api_keys and api_key not in valid_api_keys:
        raise HTTPException(status_code=403, detail="Invalid API key")


def engineer_features(customer: CustomerData) -> pd.DataFrame:
    """One request → one-row feature DataFrame, through pandas like the design's pipeline."""
    record = customer.model_dump(exclude={"extra"})
    record.update(customer.extra or {})
    frame = pd.DataFrame([record])
    raw = encode_frame(frame, predictor.extras)
    features = predictor.features.transform(predictor.cleaner.transform(raw))
    table = pd.DataFrame(features, columns=FEATURE_NAMES)
    if np.isinf(table.to_numpy()).any():  # the design's feature validation step
        raise HTTPException(status_code=422, detail="features contain inf")
    return table


def churn_probability(features: pd.DataFrame) -> float:
    """`predict_proba` on the stored booster, then the stored blend and calibration."""
    trees = classifier.predict_proba(features)[:, 1].astype(np.float64)
    if predictor.linear is not None and predictor.linear_weight:
        linear = predictor.linear.predict_proba(features.to_numpy())
        trees = (1 - predictor.linear_weight) * trees + predictor.linear_weight * linear
    return float(predictor.calibration(trees)[0])


def log_prediction(customer: CustomerData, answer: PredictionResponse) -> None:
    """Synchronous insert + commit, one row per prediction."""
    row = {
        "customer_id_hash": hashlib.sha256(customer.customer_id.encode()).hexdigest(),
        "churn_probability": answer.churn_probability,
        "will_churn": answer.will_churn,
        "risk_level": answer.risk_level,
        "features": customer.model_dump_json(exclude={"customer_id"}),
        "model_version": answer.model_version,
        "latency_ms": answer.latency_ms,
        "created_at": answer.timestamp,
    }
    with db_lock, engine.begin() as connection:
        connection.execute(insert(predictions_table), row)


def predict_one(customer: CustomerData) -> PredictionResponse:
    """The design's per-request flow, cache to cache."""
    started = time.perf_counter()
    key = f"prediction:{customer.customer_id}"
    if redis_client is not None:
        cached = redis_client.get(key)
        if cached is not None:
            return PredictionResponse.model_validate_json(cached)
    probability = churn_probability(engineer_features(customer))
    bands = (settings.risk_medium_from, settings.risk_high_from)
    level = cast(RiskLevel, RISK_LEVELS[int(np.searchsorted(bands, probability, side="right"))])
    answer = PredictionResponse(
        customer_id=customer.customer_id,
        churn_probability=probability,
        will_churn=probability >= predictor.threshold,
        risk_level=level,
        recommendation=RECOMMENDATIONS[level],
        model_version=stored.version,
        timestamp=datetime.now(UTC),
        latency_ms=(time.perf_counter() - started) * 1000.0,
    )
    log_prediction(customer, answer)
    PREDICTIONS.labels(level).inc()
    LATENCY.observe(time.perf_counter() - started)
    if redis_client is not None:
        redis_client.setex(key, CACHE_TTL_SECONDS, answer.model_dump_json())
    return answer


app = FastAPI(title="churn peer (original design)")


@app.get("/health")
async def health() -> dict[str, Any]:
    return {"status": "healthy", "model_loaded": True, "model_version": stored.version}


@app.post("/predict", dependencies=[Depends(check_api_key)])
async def predict(customer: CustomerData) -> PredictionResponse:
    return predict_one(customer)


@app.post("/predict/batch", dependencies=[Depends(check_api_key)])
async def predict_batch(customers: list[CustomerData]) -> BatchPredictionResponse:
    started = time.perf_counter()
    if len(customers) > MAX_BATCH_CUSTOMERS:
        raise HTTPException(status_code=413, detail=f"at most {MAX_BATCH_CUSTOMERS} customers")
    answers = [predict_one(customer) for customer in customers]
    return BatchPredictionResponse(
        predictions=answers,
        total_processed=len(answers),
        high_risk_count=sum(a.risk_level == "high" for a in answers),
        processing_time_ms=(time.perf_counter() - started) * 1000.0,
    )


@app.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
