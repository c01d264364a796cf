"""The IBM Telco table through the built-in profile: quality near published results,
and `evaluate --holdout` reproducing training's held-out figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.pipeline.store import StoredPredictor
from core.settings import PROJECT_ROOT
from training.evaluate import evaluate_stored_model
from training.profiles import load_profiled_table
from training.train import TrainingOptions, TrainingOutcome, train_model

TELCO = PROJECT_ROOT.parent / "shared" / "data" / "telco.csv"


@pytest.fixture(scope="module")
def telco_outcome(session_dir: Path) -> TrainingOutcome:
    table, extras = load_profiled_table(str(TELCO), None, "telco")
    options = TrainingOptions(trials=20, seed=42, progress=False, save=False)
    return train_model(table, options, session_dir / "telco-reports", extras)


def test_telco_quality_is_in_the_published_range(telco_outcome: TrainingOutcome) -> None:
    """Published clean-split results: ROC-AUC 0.84–0.86, churn F1 0.60–0.64. The issue's
    targets (0.850 / 0.63) are checked by `benchmarks/quality.py` at full trials; here a
    20-trial run must stay clearly above the README's logistic regression (0.842)."""
    metrics = telco_outcome.metrics
    assert metrics["roc_auc"] >= 0.845, metrics
    assert metrics["f1"] >= 0.62, metrics
    assert metrics["ece"] <= 0.03, metrics
    assert metrics["brier"] <= 0.136, metrics


def test_telco_uses_what_the_table_has(telco_outcome: TrainingOutcome) -> None:
    cleaner = telco_outcome.predictor.cleaner
    dropped = {
        name
        for name, gone in zip(cleaner.get_feature_names_out(), cleaner.dropped_, strict=True)
        if gone
    }
    assert {"age", "support_calls", "signup_date", "late_payments"} <= dropped
    assert "tenure_months" not in dropped and "monthly_charges" not in dropped
    assert telco_outcome.metadata["training"]["rows"] == 7043


def test_evaluate_on_the_holdout_reproduces_training(telco_outcome: TrainingOutcome) -> None:
    table, _ = load_profiled_table(str(TELCO), None, "telco")
    stored = StoredPredictor(
        telco_outcome.predictor, "unsaved", telco_outcome.metadata, Path(), checksum="unsaved"
    )
    report = evaluate_stored_model(stored, table, holdout=True)
    assert report.metrics == pytest.approx(telco_outcome.metrics, abs=1e-12)
    everything = evaluate_stored_model(stored, table, holdout=False)
    assert everything.metrics != pytest.approx(telco_outcome.metrics, abs=1e-6)
