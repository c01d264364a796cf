"""Live model performance (`churn performance`): how the served models are doing.

Per model version and window (the predictions served in it): the figures measured against
the labels that judge them (monitoring/label_join.py), beside the figures estimated from
the calibrated probabilities alone (monitoring/estimate.py), compared with the figures
training stored with the model. A measured figure worse than a configured bar, or worse
than training's by more than the configured margin, is a degradation and records a
retraining trigger. One row per metric goes to `performance_results`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, insert

from core.settings import Settings, get_settings
from monitoring.database import PERFORMANCE_RESULTS
from monitoring.degradation import Degradation, find_degradations
from monitoring.estimate import estimated_metrics, sampling_errors
from monitoring.label_join import read_window
from monitoring.measure import METRICS, measured_metrics
from monitoring.triggers import record_trigger

COVERAGE = "label_coverage"
"""Stored as one more metric row: labelled share of the window's predicted customers."""
RESULT_METRICS: tuple[str, ...] = (*METRICS, COVERAGE)


TrainingLookup = Callable[[str], Mapping[str, float] | None]


def _check_metrics(names: Mapping[str, object] | tuple[str, ...], setting: str) -> None:
    unknown = sorted(set(names) - set(METRICS))
    if unknown:
        raise ValueError(f"{setting}: unknown metric(s) {unknown}; known: {list(METRICS)}")


@dataclass(frozen=True)
class PerformanceOptions:
    """What a run measures and what counts as a degradation (defaults: core/settings.py)."""

    window: timedelta
    horizon_days: int
    min_labels: int
    max_drop: float
    drop_metrics: tuple[str, ...]
    bars: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_metrics(self.drop_metrics, "performance_drop_metrics")
        _check_metrics(self.bars, "performance_bars")

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, window: timedelta | None = None
    ) -> PerformanceOptions:
        s = settings or get_settings()
        return cls(
            window=window or timedelta(days=s.performance_window_days),
            horizon_days=s.performance_horizon_days,
            min_labels=s.performance_min_labels,
            max_drop=s.performance_max_drop,
            drop_metrics=tuple(s.performance_drop_metrics),
            bars=dict(s.performance_bars),
        )


@dataclass
class VersionPerformance:
    """One model version's figures over one window."""

    model_version: str
    prediction_count: int
    """Distinct customers the version predicted in the window (the estimate's rows)."""
    label_count: int
    """Labels that judge one of the version's predictions in the window."""
    label_coverage: float | None
    measured: dict[str, float | None]
    """None everywhere below the minimum label count."""
    measured_error: dict[str, float | None]
    """Each measured figure's standard error from label sampling alone (calibrated p,
    the labelled rows): |estimated − measured| beyond the tolerance plus two of these is
    more than chance. None where nothing is measured."""
    estimated: dict[str, float | None]
    training: dict[str, float] | None
    degradations: list[Degradation]
    trigger_id: int | None = None

    @property
    def claimed(self) -> bool:
        """Whether enough labels arrived for the measured figures to be claimed."""
        return any(value is not None for value in self.measured.values())


@dataclass
class PerformanceRun:
    """A run's window and its per-version figures (JSON via `to_dict`)."""

    run_id: str
    window_start: datetime
    window_end: datetime
    versions: list[VersionPerformance]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "versions": [{**asdict(v), "claimed": v.claimed} for v in self.versions],
        }


def _latest_per_customer(predictions: pd.DataFrame) -> pd.DataFrame:
    """Each customer's latest prediction (input sorted by time): repeats weigh once."""
    return predictions.drop_duplicates("customer_hash", keep="last")


def version_performance(
    version: str,
    predictions: pd.DataFrame,
    joined: pd.DataFrame,
    options: PerformanceOptions,
    training: Mapping[str, float] | None,
) -> VersionPerformance:
    """Figures of one version from its window predictions and its joined labels."""
    served = _latest_per_customer(predictions)
    label_count = len(joined)
    estimated = estimated_metrics(
        served["churn_probability"].to_numpy(), served["will_churn"].to_numpy()
    )
    measured: dict[str, float | None] = dict.fromkeys(METRICS)
    errors: dict[str, float | None] = dict.fromkeys(METRICS)
    if label_count >= options.min_labels:
        p, decision = joined["churn_probability"].to_numpy(), joined["will_churn"].to_numpy()
        measured = measured_metrics(joined["churned"].to_numpy(), p, decision)
        errors.update(sampling_errors(p, decision))
    coverage = joined["customer_hash"].nunique() / len(served) if len(served) else None
    reference = {k: float(v) for k, v in training.items() if k in METRICS} if training else None
    return VersionPerformance(
        model_version=version,
        prediction_count=len(served),
        label_count=label_count,
        label_coverage=coverage,
        measured=measured,
        measured_error=errors,
        estimated={metric: estimated.get(metric) for metric in METRICS},
        training=reference,
        degradations=find_degradations(
            measured,
            reference,
            max_drop=options.max_drop,
            drop_metrics=options.drop_metrics,
            bars=options.bars,
        ),
    )


def stored_training_metrics(version: str) -> dict[str, float] | None:
    """The held-out metrics training stored with the model (its metadata.yaml), once the
    model's files match their checksums; None when the version is not in the store."""
    import bentoml
    import yaml
    from bentoml.exceptions import NotFound

    from core.pipeline.integrity import verify_manifest
    from core.pipeline.store import METADATA_FILE, configured_signing_key
    from core.settings import MODEL_NAME

    try:
        model = bentoml.models.get(f"{MODEL_NAME}:{version}")
    except NotFound:
        return None
    path = Path(model.path)
    verify_manifest(path, version, configured_signing_key())
    metadata = yaml.safe_load((path / METADATA_FILE).read_text())
    return {k: float(v) for k, v in metadata.get("metrics", {}).items()}


def performance_rows(run: PerformanceRun, now: datetime) -> list[dict[str, Any]]:
    """`performance_results` rows of a run: one per version and metric."""
    rows = []
    for version in run.versions:
        figures = {
            **{m: (version.measured[m], version.estimated[m]) for m in METRICS},
            COVERAGE: (version.label_coverage, None),
        }
        for metric in RESULT_METRICS:
            measured, estimated = figures[metric]
            rows.append(
                {
                    "run_id": run.run_id,
                    "model_version": version.model_version,
                    "metric": metric,
                    "measured": measured,
                    "estimated": estimated,
                    "label_count": version.label_count,
                    "prediction_count": version.prediction_count,
                    "window_start": run.window_start,
                    "window_end": run.window_end,
                    "created_at": now,
                }
            )
    return rows


def _trigger_figures(run: PerformanceRun, version: VersionPerformance) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "window_start": run.window_start.isoformat(),
        "window_end": run.window_end.isoformat(),
        "label_count": version.label_count,
        "degradations": [asdict(d) for d in version.degradations],
        "measured": version.measured,
        "training": version.training,
    }


def run_performance(
    engine: Engine,
    options: PerformanceOptions | None = None,
    *,
    model_version: str | None = None,
    now: datetime | None = None,
    training_metrics: TrainingLookup = stored_training_metrics,
    record: bool = True,
) -> PerformanceRun:
    """Measure and estimate every version (or `model_version`) over the window ending
    `now`; with `record`, write the result rows and a trigger per degraded version."""
    options = options or PerformanceOptions.from_settings()
    end = now or datetime.now(UTC)
    start = end - options.window
    data = read_window(engine, start, end, options.horizon_days)
    predictions, joined = data.predictions, data.joined
    if model_version is not None:
        predictions = predictions[predictions["model_version"] == model_version]
        joined = joined[joined["model_version"] == model_version]
    labels_by_version = dict(iter(joined.groupby("model_version", sort=False)))
    versions = [
        version_performance(
            str(version),
            served,
            labels_by_version.get(version, joined.iloc[0:0]),
            options,
            training_metrics(str(version)),
        )
        for version, served in predictions.groupby("model_version", sort=True)
    ]
    run = PerformanceRun(uuid.uuid4().hex, start, end, versions)
    if record and versions:
        with engine.begin() as connection:
            connection.execute(insert(PERFORMANCE_RESULTS), performance_rows(run, end))
        for version in versions:
            if version.degradations:
                figures = _trigger_figures(run, version)
                version.trigger_id = record_trigger(
                    engine, "performance", version.model_version, [], figures, now=end
                )
    return run
