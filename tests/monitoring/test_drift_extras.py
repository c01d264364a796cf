"""Drift of a model trained with a data profile's extra columns: the extras logged in the
request's ``extra`` object are compared as inputs, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import bentoml
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from core.pipeline.encode import encode_frame
from core.pipeline.extras import ExtraColumn
from core.pipeline.store import load_predictor
from monitoring.drift import run_drift
from monitoring.records import PredictionRecord, insert_rows, record_row
from tests.monitoring.test_drift_job import NOW, WEEK, logged_fields
from training.generate import generate_customers
from training.train import TrainingOptions, train_model

EXTRAS = [ExtraColumn("region", "category"), ExtraColumn("nps", "number")]


def with_extras(rows: int, seed: int, nps_shift: float = 0.0) -> pd.DataFrame:
    frame = generate_customers(rows, seed)
    rng = np.random.default_rng(seed)
    frame["region"] = rng.choice(["north", "south", "east"], rows)
    frame["nps"] = np.round(rng.normal(30 + nps_shift * 20, 20, rows), 1)
    return frame


@pytest.fixture(scope="module")
def extras_model(session_dir: Path) -> Iterator[str]:
    options = TrainingOptions(trials=1, seed=3, progress=False, search_rows=1000)
    outcome = train_model(with_extras(3000, 1), options, session_dir / "reports-extras", EXTRAS)
    assert outcome.tag is not None
    yield outcome.tag
    bentoml.models.delete(outcome.tag)  # the session's other tests serve `latest`


def log(engine: Engine, tag: str, frame: pd.DataFrame) -> None:
    stored = load_predictor(tag)
    extras = stored.predictor.extras
    probabilities = stored.predictor.predict_proba(encode_frame(frame, extras))
    fields = logged_fields(frame.drop(columns=["region", "nps"]))
    records = []
    for i, (row, p) in enumerate(zip(fields, probabilities, strict=True)):
        row["extra"] = {"region": frame["region"].iloc[i], "nps": float(frame["nps"].iloc[i])}
        records.append(
            record_row(
                PredictionRecord(
                    request_id="r", customer_hash=f"{i:064x}", model_version=stored.version,
                    features=row, churn_probability=float(p), will_churn=False,
                    risk_level="low", latency_ms=1.0, cache="miss", endpoint="batch",
                    created_at=NOW - timedelta(hours=1) - timedelta(seconds=i),
                )
            )
        )  # fmt: skip
    with engine.begin() as connection:
        insert_rows(connection, records)


def test_extra_columns_are_compared_as_inputs(engine: Engine, extras_model: str) -> None:
    log(engine, extras_model, with_extras(2000, seed=5, nps_shift=1.5))
    run = run_drift(engine, WEEK, now=NOW, progress=False, record=False)
    (version,) = run.versions
    inputs = {c.column: c for c in version.columns if c.kind == "input"}
    assert inputs["nps"].psi >= 0.25
    assert inputs["region"].psi < 0.1
    assert inputs["tenure_months"].psi < 0.1
