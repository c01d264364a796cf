"""The latest stored results of the monitoring jobs, per model version: what `/metrics` exports.

`churn drift` and `churn performance` run outside the serving workers (cron, a Kubernetes
CronJob) and store one row per column or metric and run in `drift_results` and
`performance_results`. The service reads back the newest run of each model version
(serving/model_metrics.py turns it into gauges), so Prometheus sees the batch jobs'
figures on the scrape it already has, without a Pushgateway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Table, func, select

from monitoring.database import DRIFT_RESULTS, PERFORMANCE_RESULTS

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


def _latest_rows(engine: Engine, table: Table) -> list[Any]:
    """Rows of each model version's newest run (runs are told apart by `run_id`)."""
    newest = (
        select(table.c.model_version, func.max(table.c.created_at).label("at"))
        .group_by(table.c.model_version)
        .subquery()
    )
    runs = (
        select(table.c.run_id)
        .join(
            newest,
            (table.c.model_version == newest.c.model_version) & (table.c.created_at == newest.c.at),
        )
        .distinct()
    )
    with engine.connect() as connection:
        return list(connection.execute(select(table).where(table.c.run_id.in_(runs))))


def read_latest_results(engine: Engine) -> LatestResults:
    """The newest drift and performance run of every model version (empty if none ran)."""
    drift = [
        DriftFigure(row.model_version, row.kind, row.column, float(row.psi), row.band)
        for row in _latest_rows(engine, DRIFT_RESULTS)
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
        for row in _latest_rows(engine, PERFORMANCE_RESULTS)
    ]
    return LatestResults(drift, performance)
