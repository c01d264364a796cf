"""The latest stored results of the monitoring jobs, per model version: what `/metrics` exports.

`churn drift` and `churn performance` run outside the serving workers (cron, a Kubernetes
CronJob) and store one row per column or metric and run in `drift_results` and
`performance_results`. The service reads back the newest run of the model version it
serves (serving/model_metrics.py turns it into gauges), so Prometheus sees the batch jobs'
figures on the scrape it already has, without a Pushgateway. Only the served version: an
old model's last drift run must not keep an alert firing after the retrained one is live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, func, select

from monitoring.database import DRIFT_RESULTS, PERFORMANCE_RESULTS, RETRAINING_TRIGGERS

BANDS = ("none", "moderate", "significant")
"""Drift bands in order of severity; `churn_drift_status` is the index of the worst."""


@dataclass(frozen=True)
class DriftFigure:
    """One column's PSI in the latest drift run of a model version."""

    model_version: str
    kind: str
    column: str
    psi: float
    band: str


@dataclass(frozen=True)
class PerformanceFigure:
    """One metric in the latest performance run of a model version."""

    model_version: str
    metric: str
    measured: float | None
    estimated: float | None
    label_count: int
    prediction_count: int


@dataclass(frozen=True)
class LatestResults:
    drift: list[DriftFigure]
    performance: list[PerformanceFigure]
    last_run: dict[str, datetime] = field(default_factory=dict)
    """When the latest `drift` and `performance` run of the version was stored."""
    triggers: dict[tuple[str, str], int] = field(default_factory=dict)
    """Retraining triggers of the version by (reason, `pending` or `consumed`)."""

    def drift_status(self) -> dict[str, int]:
        """Per model version, the index in `BANDS` of its worst column's band."""
        status: dict[str, int] = {}
        for figure in self.drift:
            level = BANDS.index(figure.band) if figure.band in BANDS else 0
            status[figure.model_version] = max(status.get(figure.model_version, 0), level)
        return status

    def label_coverage(self) -> dict[str, float]:
        """Per model version, labelled predictions / predictions of its latest window."""
        coverage: dict[str, float] = {}
        for figure in self.performance:
            if figure.prediction_count > 0:
                share = figure.label_count / figure.prediction_count
                coverage[figure.model_version] = max(coverage.get(figure.model_version, 0), share)
        return coverage


def _latest_rows(engine: Engine, table: Table, version: str) -> list[Any]:
    """Rows of the version's newest run (runs are told apart by `run_id`)."""
    mine = table.c.model_version == version
    newest = select(func.max(table.c.created_at)).where(mine).scalar_subquery()
    run = select(table.c.run_id).where(mine, table.c.created_at == newest).limit(1)
    with engine.connect() as connection:
        return list(
            connection.execute(select(table).where(table.c.run_id == run.scalar_subquery()))
        )


def _triggers(engine: Engine, version: str) -> dict[tuple[str, str], int]:
    table = RETRAINING_TRIGGERS
    state = table.c.consumed_at.is_(None)
    query = (
        select(table.c.reason, state.label("pending"), func.count())
        .where(table.c.model_version == version)
        .group_by(table.c.reason, state)
    )
    with engine.connect() as connection:
        return {
            (reason, "pending" if pending else "consumed"): int(count)
            for reason, pending, count in connection.execute(query)
        }


def read_latest_results(engine: Engine, version: str) -> LatestResults:
    """The newest drift and performance run of `version` (empty if none ran)."""
    drift_rows = _latest_rows(engine, DRIFT_RESULTS, version)
    performance_rows = _latest_rows(engine, PERFORMANCE_RESULTS, version)
    drift = [
        DriftFigure(row.model_version, row.kind, row.column, float(row.psi), row.band)
        for row in drift_rows
    ]
    performance = [
        PerformanceFigure(
            row.model_version,
            row.metric,
            row.measured,
            row.estimated,
            int(row.label_count),
            int(row.prediction_count),
        )
        for row in performance_rows
    ]
    last_run = {
        name: max(row.created_at for row in rows)
        for name, rows in (("drift", drift_rows), ("performance", performance_rows))
        if rows
    }
    return LatestResults(drift, performance, last_run, _triggers(engine, version))
