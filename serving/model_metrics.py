"""The monitoring jobs' latest results as gauges: model performance, PSI, drift status.

Why the service exports them (rather than the jobs pushing to a Pushgateway): the figures
are already stored (`drift_results`, `performance_results`), the service is already
scraped, and a Pushgateway would be one more stateful thing to run, whose pushed values
outlive the job that pushed them. When a scrape reaches `/metrics`, the worker answering it
re-reads the latest results if its copy is older than `CHURN_MONITORING_REFRESH_S`
(`Gateway` calls :meth:`MonitoringGauges.refresh`), then BentoML writes the exposition.

One series per gauge with several workers: the gauges use prometheus_client's
`mostrecent` multiprocess mode, so the exposition (merged from every worker's files) shows
the value set last, by whichever worker read the database last; every worker reads the
same tables, so that is the freshest figure, never one series per pid or a sum of copies.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

import anyio
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from monitoring.latest_results import LatestResults, read_latest_results
from monitoring.triggers import REASONS

logger = logging.getLogger("churn.metrics")

PERFORMANCE_GAUGES = {
    "accuracy": "churn_model_accuracy",
    "precision": "churn_model_precision",
    "recall": "churn_model_recall",
    "f1": "churn_model_f1",
    "roc_auc": "churn_model_roc_auc",
}
"""`performance_results.metric` → gauge; each labelled `model_version` and `source`
(`measured` against labels, `estimated` from the calibrated probabilities)."""


@dataclass(frozen=True)
class _Gauges:
    performance: dict[str, Any]
    psi: Any
    drift_status: Any
    label_coverage: Any
    last_run: Any
    triggers: Any
    refreshed: Any


@cache
def _gauges() -> _Gauges:
    """Created once per process, after BentoML has set the multiprocess folder."""
    from prometheus_client import Gauge

    def gauge(name: str, documentation: str, labels: list[str]) -> Any:
        return Gauge(name, documentation, labels, multiprocess_mode="mostrecent")

    return _Gauges(
        performance={
            metric: gauge(
                name,
                f"Latest {metric} of the model version (`churn performance`).",
                ["model_version", "source"],
            )
            for metric, name in PERFORMANCE_GAUGES.items()
        },
        psi=gauge(
            "churn_feature_psi",
            "Latest PSI of a column (`churn drift`); kind: feature, input or prediction.",
            ["model_version", "kind", "feature"],
        ),
        drift_status=gauge(
            "churn_drift_status",
            "Worst drift band of the model version's latest run: 0 none, 1 moderate, "
            "2 significant.",
            ["model_version"],
        ),
        label_coverage=gauge(
            "churn_label_coverage",
            "Share of the latest performance window's predictions that have a label.",
            ["model_version"],
        ),
        last_run=gauge(
            "churn_monitoring_last_run_timestamp_seconds",
            "When the latest stored run of a monitoring check (drift, performance) ended.",
            ["model_version", "check"],
        ),
        triggers=gauge(
            "churn_retraining_triggers",
            "Retraining triggers recorded for the model version, by reason and state "
            "(pending: not yet consumed by retraining).",
            ["model_version", "reason", "state"],
        ),
        refreshed=Gauge(
            "churn_monitoring_results_read_timestamp_seconds",
            "When the service last read the monitoring results from the database.",
            multiprocess_mode="max",
        ),
    )


def export(results: LatestResults, version: str) -> None:
    """Set the gauges from `results` (a figure not claimed, e.g. below the minimum label
    count, is NaN: an alert comparing it stays silent)."""
    gauges = _gauges()
    for check, moment in results.last_run.items():
        gauges.last_run.labels(model_version=version, check=check).set(moment.timestamp())
    for reason in REASONS:
        for state in ("pending", "consumed"):
            count = results.triggers.get((reason, state), 0)
            gauges.triggers.labels(model_version=version, reason=reason, state=state).set(count)
    for figure in results.performance:
        metric = gauges.performance.get(figure.metric)
        if metric is None:
            continue
        for source, value in (("measured", figure.measured), ("estimated", figure.estimated)):
            number = math.nan if value is None else float(value)
            metric.labels(model_version=figure.model_version, source=source).set(number)
    for drift in results.drift:
        gauges.psi.labels(
            model_version=drift.model_version, kind=drift.kind, feature=drift.column
        ).set(drift.psi)
    for model, status in results.drift_status().items():
        gauges.drift_status.labels(model_version=model).set(status)
    for model, share in results.label_coverage().items():
        gauges.label_coverage.labels(model_version=model).set(share)
    gauges.refreshed.set(time.time())


class MonitoringGauges:
    """This worker's copy of the latest results of the served model version, read again at
    most every `max_age_s`."""

    def __init__(self, engine: Engine, version: str, max_age_s: float) -> None:
        self.engine = engine
        self.version = version
        self.max_age_s = max_age_s
        self._read_at = -math.inf
        self._lock = threading.Lock()

    def follow(self, version: str) -> None:
        """Export `version`'s results from the next scrape on (the champion changed)."""
        with self._lock:
            self.version, self._read_at = version, -math.inf

    def refresh_now(self) -> None:
        """Read and export, unless another scrape just did (a database down keeps the last
        values; the failure is logged and retried after `max_age_s`)."""
        with self._lock:
            if time.monotonic() - self._read_at < self.max_age_s:
                return
            self._read_at = time.monotonic()
            try:
                results = read_latest_results(self.engine, self.version)
            except SQLAlchemyError as error:
                logger.warning("monitoring results not read: %s", type(error).__name__)
                return
            export(results, self.version)

    async def refresh(self) -> None:
        """`refresh_now` off the event loop (it may wait on the database)."""
        if time.monotonic() - self._read_at >= self.max_age_s:
            await anyio.to_thread.run_sync(self.refresh_now)
