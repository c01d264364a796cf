"""Tests for training.evaluate and training.plots: hand-checked values and sklearn parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from core.calibration import expected_calibration_error, reliability_table
from training.evaluate import (
    METRIC_NAMES,
    EvaluationReport,
    choose_threshold,
    compute_metrics,
    evaluate_predictions,
)
from training.plots import write_evaluation_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _random_predictions(seed: int = 0, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from the probabilities, so the data are calibrated up to noise."""
    rng = np.random.default_rng(seed)
    proba = rng.beta(2, 5, size=n)
    y = (rng.random(n) < proba).astype(np.int64)
    return y, proba


# --- expected_calibration_error -------------------------------------------------------------


def test_ece_is_zero_when_every_bin_is_calibrated() -> None:
    # Bin [0.2, 0.3): p=0.25, 1 of 4 churn; bin [0.7, 0.8): p=0.75, 3 of 4 churn.
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    p = np.array([0.25] * 4 + [0.75] * 4)
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("n_bins", "expected"),
    [
        # bins 2 and 8: 0.5 * |1.0 - 0.2| + 0.5 * |0.5 - 0.8| = 0.4 + 0.15
        (10, 0.55),
        # one bin: |0.75 - 0.5|
        (1, 0.25),
    ],
)
def test_ece_matches_hand_computed_value(n_bins: int, expected: float) -> None:
    y = np.array([1, 1, 1, 0])
    p = np.array([0.2, 0.2, 0.8, 0.8])
    assert expected_calibration_error(y, p, n_bins=n_bins) == pytest.approx(expected)


def test_ece_puts_probability_one_in_the_last_bin() -> None:
    table = reliability_table(np.array([1, 0, 1]), np.array([1.0, 0.0, 0.95]), n_bins=10)
    assert table.counts.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert table.counts.sum() == 3


# --- choose_threshold -----------------------------------------------------------------------


def test_choose_threshold_picks_f1_maximising_cut() -> None:
    # F1 at cuts 0.1..0.8: 0.667, 0.75, 0.857, 0.667, 0.8, 0.5 → best is 0.3.
    y = np.array([0, 0, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.8])
    assert choose_threshold(y, p) == pytest.approx(0.3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_choose_threshold_is_no_worse_than_any_observed_cut(seed: int) -> None:
    y, p = _random_predictions(seed)
    threshold = choose_threshold(y, p)
    best = skm.f1_score(y, p >= threshold)
    assert 0.0 < threshold < 1.0
    assert all(best >= skm.f1_score(y, p >= cut) - 1e-12 for cut in np.unique(p))


def test_choose_threshold_stays_inside_open_interval() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.0, 0.0, 1.0, 1.0])
    threshold = choose_threshold(y, p)
    assert 0.0 < threshold < 1.0
    assert compute_metrics(y, p, threshold)["f1"] == 1.0


# --- compute_metrics ------------------------------------------------------------------------


def test_compute_metrics_keys_are_exact() -> None:
    y, p = _random_predictions()
    assert list(compute_metrics(y, p, 0.5)) == list(METRIC_NAMES)
    assert set(METRIC_NAMES) == {
        "roc_auc",
        "pr_auc",
        "f1",
        "precision",
        "recall",
        "accuracy",
        "brier",
        "ece",
        "threshold",
    }


@pytest.mark.parametrize("threshold", [0.2, 0.35, 0.5])
def test_compute_metrics_match_sklearn(threshold: float) -> None:
    y, p = _random_predictions(seed=7)
    y_pred = (p >= threshold).astype(int)
    got = compute_metrics(y, p, threshold)
    expected = {
        "roc_auc": skm.roc_auc_score(y, p),
        "pr_auc": skm.average_precision_score(y, p),
        "f1": skm.f1_score(y, y_pred),
        "precision": skm.precision_score(y, y_pred, zero_division=0),
        "recall": skm.recall_score(y, y_pred),
        "accuracy": skm.accuracy_score(y, y_pred),
        "brier": skm.brier_score_loss(y, p),
        "ece": expected_calibration_error(y, p),
        "threshold": threshold,
    }
    assert got == pytest.approx(expected)
    assert all(type(v) is float for v in got.values())


def test_perfect_predictions() -> None:
    y = np.array([0, 0, 0, 1, 1])
    got = compute_metrics(y, y.astype(float), 0.5)
    assert got["roc_auc"] == 1.0
    assert got["brier"] == 0.0
    assert got["ece"] == 0.0
    assert got["f1"] == got["accuracy"] == 1.0


def test_precision_is_zero_when_nothing_is_predicted_positive() -> None:
    y, p = _random_predictions()
    got = compute_metrics(y, p, threshold=1.0 + 1e-9)
    assert got["precision"] == got["recall"] == got["f1"] == 0.0


@pytest.mark.parametrize(
    ("y", "p"),
    [
        ([0, 1, 2], [0.1, 0.5, 0.9]),  # label outside 0/1
        ([0, 1], [0.1, 1.5]),  # probability above 1
        ([0, 1], [0.1, np.nan]),  # NaN probability
        ([0, 1, 1], [0.1, 0.5]),  # length mismatch
        ([1, 1], [0.4, 0.5]),  # one class only
        ([], []),  # empty
    ],
)
def test_compute_metrics_rejects_bad_input(y: list[float], p: list[float]) -> None:
    with pytest.raises(ValueError):
        compute_metrics(np.array(y), np.array(p, dtype=float), 0.5)


# --- evaluate_predictions -------------------------------------------------------------------


def test_evaluate_predictions_confusion_matrix_and_json() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.7, 0.4, 0.8, 0.9])
    report = evaluate_predictions(y, p, threshold=0.5)
    assert isinstance(report, EvaluationReport)
    # rows actual 0/1, cols predicted 0/1: one false positive (0.7), one false negative (0.4)
    assert report.confusion_matrix == [[2, 1], [1, 2]]
    assert report.metrics == compute_metrics(y, p, 0.5)
    assert report.classification_report["1"]["support"] == 3
    as_dict = report.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert set(as_dict) == {"metrics", "confusion_matrix", "classification_report"}


# --- plots ----------------------------------------------------------------------------------

PLOT_NAMES = {"roc", "precision_recall", "calibration", "confusion_matrix", "feature_importance"}


@pytest.mark.parametrize(
    "importance",
    [
        {f"feature_{i}": float(i) for i in range(30)},  # more than the top 20 shown
        {},  # no importances: still a titled, empty plot
    ],
)
def test_write_evaluation_plots_creates_five_pngs(
    tmp_path: Path, importance: dict[str, float]
) -> None:
    y, p = _random_predictions(n=200)
    out_dir = tmp_path / "plots"
    paths = write_evaluation_plots(y, p, 0.3, importance, out_dir)
    assert set(paths) == PLOT_NAMES
    for name, path in paths.items():
        assert path == out_dir / f"{name}.png"
        data = path.read_bytes()
        assert len(data) > 1000
        assert data.startswith(PNG_MAGIC)
