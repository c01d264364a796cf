"""Training on synthetic data: quality against the known optimum, stored-model round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from core.pipeline.encode import encode_frame
from core.pipeline.features import FEATURE_NAMES
from core.pipeline.store import BOOSTER_FILE, METADATA_FILE, load_predictor, load_reference
from training.data import prepare_table, split_xy
from training.evaluate import METRIC_NAMES
from training.train import TrainingOptions, TrainingOutcome, final_round


def test_held_out_auc_is_within_002_of_bayes_optimal(trained: TrainingOutcome) -> None:
    optimum = trained.metadata["training"]["bayes_optimal_auc_test"]
    assert trained.metrics["roc_auc"] >= optimum - 0.02, (trained.metrics, optimum)


def test_metrics_are_the_documented_keys_and_sane(trained: TrainingOutcome) -> None:
    assert set(trained.metrics) == set(METRIC_NAMES)
    assert 0 < trained.metrics["threshold"] < 1
    assert trained.metrics["ece"] < 0.05
    assert trained.metrics["brier"] < 0.1  # ~10 % churners: always-0 scores 0.1


def test_threshold_comes_from_training_not_a_constant(trained: TrainingOutcome) -> None:
    assert trained.predictor.threshold != pytest.approx(0.5)
    assert trained.metadata["threshold"] == trained.predictor.threshold


def test_stored_model_round_trips(trained: TrainingOutcome) -> None:
    assert trained.tag is not None
    stored = load_predictor(trained.tag)
    assert stored.version == trained.tag.split(":")[1]
    expected = trained.predictor.predict_proba(trained.test_raw)
    np.testing.assert_allclose(
        stored.predictor.predict_proba(trained.test_raw), expected, atol=1e-9
    )
    assert stored.predictor.threshold == trained.predictor.threshold
    assert list(stored.predictor.feature_names) == list(FEATURE_NAMES)
    assert (stored.path / BOOSTER_FILE).exists() and (stored.path / METADATA_FILE).exists()
    json.loads((stored.path / BOOSTER_FILE).read_text())  # XGBoost native JSON
    for key in ("metrics", "params", "feature_names", "reference_profile", "mlflow_run_id"):
        assert key in stored.metadata, key
    assert len(stored.metadata["training"]["data_hash"]) == 64


def test_reference_sample_has_the_feature_columns(trained: TrainingOutcome) -> None:
    stored = load_predictor(trained.tag or "")
    reference = pd.read_parquet(stored.path / "reference.parquet")
    assert list(reference.columns) == list(FEATURE_NAMES)
    assert len(reference) > 1000


def test_drift_reference_has_raw_inputs_and_held_out_probabilities(
    trained: TrainingOutcome,
) -> None:
    """The drift reference: the feature rows' raw inputs (same rows, no customer id) and
    the held-out rows' probabilities, as served."""
    stored = load_predictor(trained.tag or "")
    reference = load_reference(stored.path)
    assert reference.missing() == []
    assert reference.inputs is not None and reference.features is not None
    assert len(reference.inputs) == len(reference.features)
    assert "customer_id" not in reference.inputs.columns
    assert {"tenure_months", "contract", "signup_date"} <= set(reference.inputs.columns)
    rebuilt = stored.predictor.transform(encode_frame(reference.inputs))
    np.testing.assert_allclose(rebuilt, reference.features.to_numpy(), rtol=1e-9)
    held_out = trained.predictor.predict_proba(trained.test_raw)
    assert reference.predictions is not None
    np.testing.assert_allclose(reference.predictions, held_out)


def test_plots_are_written(trained: TrainingOutcome, session_dir) -> None:  # type: ignore[no-untyped-def]
    names = {p.name for p in (session_dir / "reports").glob("*.png")}
    assert {
        "roc.png",
        "precision_recall.png",
        "calibration.png",
        "confusion_matrix.png",
        "feature_importance.png",
    } <= names


def test_probabilities_rank_like_the_truth(trained: TrainingOutcome, synthetic_table) -> None:  # type: ignore[no-untyped-def]
    proba = trained.predictor.predict_proba(trained.test_raw)
    assert roc_auc_score(trained.test_y, proba) == pytest.approx(trained.metrics["roc_auc"])


def test_more_support_calls_never_lower_risk(trained: TrainingOutcome) -> None:
    """Directional: on average, adding support calls raises predicted churn."""
    from core.pipeline.encode import RAW_INDEX

    raw = trained.test_raw[:500].copy()
    base = trained.predictor.predict_proba(raw)
    raw[:, RAW_INDEX["support_calls"]] += 4
    assert trained.predictor.predict_proba(raw).mean() > base.mean()


def test_search_finalists_are_judged_on_every_training_row(trained: TrainingOutcome) -> None:
    training = trained.metadata["training"]
    assert training["search_rows"] < training["train_rows"]
    assert training["finalists"] == 3
    assert len(training["cv_auc_finalists"]) == 3
    # The winner is the finalist with the best CV on all rows, not the sample's leader.
    assert training["cv_auc_full_oof"] == max(training["cv_auc_finalists"])


def test_final_round_picks_the_better_candidate_on_all_rows(synthetic_table: object) -> None:
    frame, _ = prepare_table(synthetic_table.iloc[:3000])  # type: ignore[attr-defined]
    features, y = split_xy(frame)
    raw = encode_frame(features)
    options = TrainingOptions(trials=1, seed=3, progress=False)
    stump = {"max_depth": 1, "learning_rate": 0.001, "colsample_bytree": 0.5}
    sensible = {"max_depth": 2, "learning_rate": 0.1}
    final = final_round(raw, y, [stump, sensible], options)
    assert final.params == sensible
    assert final.finalist_aucs[1] > final.finalist_aucs[0]
    assert final.cv.auc == final.finalist_aucs[1]
    assert not np.isnan(final.cv.oof).any()  # every training row was scored out of fold
    assert sum(len(fold.valid_index) for fold in final.folds) == len(y)
