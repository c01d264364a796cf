"""The monitoring gauges in one process: read on demand, at most every `max_age_s`, kept
through a database that cannot be read, NaN where no figure is claimed."""

from __future__ import annotations

import math
from pathlib import Path

from prometheus_client import REGISTRY

from monitoring.database import make_engine, upgrade_schema
from serving.model_metrics import MonitoringGauges
from tests.results_rows import insert_drift, insert_performance


def psi(feature: str, version: str = "v-gauges") -> float | None:
    labels = {"model_version": version, "kind": "feature", "feature": feature}
    return REGISTRY.get_sample_value("churn_feature_psi", labels)


def accuracy(source: str, version: str = "v-gauges") -> float | None:
    labels = {"model_version": version, "source": source}
    return REGISTRY.get_sample_value("churn_model_accuracy", labels)


def test_results_are_read_at_most_every_max_age_and_kept_when_unreadable(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    upgrade_schema(engine)
    insert_drift(engine, "v-gauges", {"tenure_months": 0.31})
    insert_drift(engine, "v-other", {"tenure_months": 0.99})
    insert_performance(engine, "v-gauges", {"accuracy": None}, labels=2)
    gauges = MonitoringGauges(engine, "v-gauges", max_age_s=3600)
    gauges.refresh_now()
    assert psi("tenure_months") == 0.31
    assert psi("tenure_months", "v-other") is None, "only the served version"
    measured = accuracy("measured")
    assert measured is not None and math.isnan(measured), "no figure claimed: NaN"

    insert_drift(engine, "v-gauges", {"tenure_months": 0.02})
    gauges.refresh_now()
    assert psi("tenure_months") == 0.31, "within max_age: the copy, no database read"
    gauges.max_age_s = 0
    gauges.refresh_now()
    assert psi("tenure_months") == 0.02

    gauges.engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables
    gauges.refresh_now()  # logged, not raised
    assert psi("tenure_months") == 0.02, "the last values stay"
