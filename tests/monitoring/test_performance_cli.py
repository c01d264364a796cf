"""`churn performance` end to end, on SQLite and a real PostgreSQL: the session's trained
model's own held-out rows, served and labelled, give back the figures training stored
with the model; flipped labels for a share of its customers record a degradation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from cli import app
from monitoring.measure import METRICS
from monitoring.triggers import pending_triggers
from tests.monitoring.served import Served, label, serve
from tests.serving.inprocess import environment
from training.train import TrainingOutcome

runner = CliRunner()
ESTIMATE_TOLERANCE = 0.03
"""The real model's tolerance (README); one window's labels add their sampling error, of
which two standard errors are allowed on top (README: what a single window may show)."""


@pytest.fixture
def churn_db(engine: Engine, database_url: str) -> Iterator[Engine]:
    """The CLI's DATABASE_URL is the test's database, for the test only."""
    with environment({"DATABASE_URL": database_url}):
        yield engine


def held_out_traffic(engine: Engine, trained: TrainingOutcome) -> tuple[list[str], np.ndarray]:
    """The held-out customers served two days ago by the trained model; returns ids, labels."""
    assert trained.tag is not None
    version = trained.tag.split(":")[1]
    p = trained.predictor.predict_proba(trained.test_raw)
    decision = p >= trained.predictor.threshold  # the service's rule (serving/scoring.py)
    served_at = datetime.now(UTC) - timedelta(days=2)
    ids = [f"HELD-{i:05d}" for i in range(p.size)]
    serve(engine, [Served(c, p[i], decision[i], served_at, version) for i, c in enumerate(ids)])
    return ids, trained.test_y.astype(bool)


def churn_performance(out: Path, *options: str) -> tuple[str, dict[str, Any]]:
    result = runner.invoke(app, ["performance", "--window", "7d", "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    return result.output, json.loads((out / "performance.json").read_text())


def test_churn_performance_gives_back_trainings_figures_then_a_degradation(
    churn_db: Engine, trained: TrainingOutcome, tmp_path: Path
) -> None:
    assert trained.tag is not None
    ids, churned = held_out_traffic(churn_db, trained)
    today = datetime.now(UTC).date()
    label(churn_db, [(c, churned[i], today) for i, c in enumerate(ids)])

    output, summary = churn_performance(tmp_path / "honest", "--model", trained.tag)
    (version,) = summary["versions"]
    assert version["model_version"] == trained.tag.split(":")[1]
    assert version["label_count"] == len(ids) and version["label_coverage"] == 1.0
    expected = {metric: trained.metrics[metric] for metric in METRICS}
    assert version["measured"] == pytest.approx(expected, abs=1e-9)
    assert version["training"] == pytest.approx(expected, abs=1e-9)
    for metric in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        gap = abs(version["estimated"][metric] - version["measured"][metric])
        assert gap <= ESTIMATE_TOLERANCE + 2 * version["measured_error"][metric], (metric, gap)
    assert version["measured_error"]["precision"] > version["measured_error"]["accuracy"]
    assert version["degradations"] == [] and pending_triggers(churn_db) == []
    assert f"{expected['accuracy']:.4f}" in output and "degraded" not in output

    flip = np.random.default_rng(0).random(len(ids)) < 0.2
    label(churn_db, [(c, churned[i] != flip[i], today) for i, c in enumerate(ids)])
    output, summary = churn_performance(tmp_path / "flipped")
    (version,) = summary["versions"]
    assert "accuracy" in {d["metric"] for d in version["degradations"]}
    assert version["measured"]["accuracy"] < expected["accuracy"] - 0.03
    assert "degraded" in output and "retraining trigger" in output
    (trigger,) = pending_triggers(churn_db)
    assert trigger.id == version["trigger_id"]
    assert trigger.model_version == version["model_version"]


def test_churn_performance_refuses_a_malformed_window_or_an_unknown_model(
    churn_db: Engine,
) -> None:
    result = runner.invoke(app, ["performance", "--window", "a week"])
    assert result.exit_code == 2
    assert "window" in result.output
    result = runner.invoke(app, ["performance", "--model", "churn_model:nosuchversion"])
    assert result.exit_code == 2
    assert "no model churn_model:nosuchversion" in result.output


def test_churn_performance_on_an_empty_window_says_so(churn_db: Engine, tmp_path: Path) -> None:
    output, summary = churn_performance(tmp_path)
    assert "no predictions served in the window" in output
    assert summary["versions"] == []
