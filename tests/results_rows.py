"""Rows of the monitoring jobs' tables, inserted directly: the stored results the service
exports on `/metrics` (written by `churn drift` / `churn performance` in production)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert

from monitoring.database import DRIFT_RESULTS, PERFORMANCE_RESULTS


def _window(now: datetime | None = None) -> dict[str, datetime]:
    now = now or datetime.now(UTC)
    return {"window_start": now - timedelta(days=7), "window_end": now, "created_at": now}


def insert_drift(
    engine: Engine, version: str, psi: dict[str, float], at: datetime | None = None
) -> str:
    """One drift run of `version`: a `feature` row per column; returns the run id."""
    run = uuid.uuid4().hex
    band = {True: "significant", False: "none"}
    rows = [
        {
            "run_id": run,
            "model_version": version,
            "kind": "feature",
            "column": column,
            "psi": value,
            "band": "moderate" if 0.1 <= value < 0.25 else band[value >= 0.25],
            "reference_rows": 4000,
            "current_rows": 1000,
            **_window(at),
        }
        for column, value in psi.items()
    ]
    with engine.begin() as connection:
        connection.execute(insert(DRIFT_RESULTS), rows)
    return run


def insert_performance(
    engine: Engine,
    version: str,
    measured: dict[str, float | None],
    labels: int = 500,
    at: datetime | None = None,
) -> str:
    """One performance run of `version` (estimates 0.01 above the measured figures)."""
    run = uuid.uuid4().hex
    rows = [
        {
            "run_id": run,
            "model_version": version,
            "metric": metric,
            "measured": value,
            "estimated": None if value is None else value + 0.01,
            "label_count": labels,
            "prediction_count": 1000,
            **_window(at),
        }
        for metric, value in measured.items()
    ]
    with engine.begin() as connection:
        connection.execute(insert(PERFORMANCE_RESULTS), rows)
    return run
