"""The estimate before labels (monitoring/estimate.py) and the live ECE: exact on small
cases, and within the README's tolerance of the measured figures on synthetic windows
whose labels are drawn from calibrated probabilities — means over seeds, not one draw."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.pipeline.encode import encode_frame
from core.settings import TRUE_PROBABILITY_COLUMN
from monitoring.estimate import (
    ESTIMATED_METRICS,
    estimated_metrics,
    expected_confusion,
    expected_roc_auc,
    sampling_errors,
)
from monitoring.measure import measured_metrics
from training.data import prepare_table, split_xy
from training.generate import generate_customers
from training.train import TrainingOutcome

WINDOW_ROWS = 2000
SEEDS = 20
TOLERANCE = 0.02
"""README: mean |estimate − measured| over windows of 2,000 labelled rows."""
BIAS = 0.01
"""README: |mean (estimate − measured)| over the same windows."""


def calibrated_window(seed: int, rows: int = WINDOW_ROWS) -> tuple[np.ndarray, ...]:
    """Probabilities shaped like served churn scores, decisions at 0.35, labels ~ p."""
    rng = np.random.default_rng(seed)
    p = rng.beta(1.0, 2.5, rows)
    return p, p >= 0.35, rng.random(rows) < p


def test_the_expected_confusion_matrix_sums_each_rows_chances() -> None:
    m = expected_confusion(np.array([0.9, 0.6, 0.2, 0.1]), np.array([1, 1, 0, 0]))
    assert (m.tp, m.fp, m.fn, m.tn) == pytest.approx((1.5, 0.5, 0.3, 1.7))
    figures = estimated_metrics(np.array([0.9, 0.6, 0.2, 0.1]), np.array([1, 1, 0, 0]))
    assert figures["accuracy"] == pytest.approx(3.2 / 4)
    assert figures["precision"] == pytest.approx(1.5 / 2)
    assert figures["recall"] == pytest.approx(1.5 / 1.8)


def test_the_expected_roc_auc_is_the_pair_sum_ties_counted_half() -> None:
    p = np.round(np.random.default_rng(0).random(40), 1)  # many ties
    pairs = ordered = 0.0
    for i, j in itertools.permutations(range(p.size), 2):
        weight = p[i] * (1 - p[j])  # i churns, j stays
        pairs += weight
        ordered += weight * (1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0)
    assert expected_roc_auc(p) == pytest.approx(ordered / pairs, rel=1e-12)


def test_undefined_estimates_are_none() -> None:
    assert expected_roc_auc(np.array([0.3])) is None
    figures = estimated_metrics(np.array([0.2, 0.3]), np.array([0, 0]))
    assert figures["precision"] is None  # nobody flagged
    assert set(estimated_metrics(np.array([]), np.array([])).values()) == {None}


def test_the_estimate_lands_within_tolerance_of_the_measured_figures() -> None:
    errors: dict[str, list[float]] = {metric: [] for metric in ESTIMATED_METRICS}
    for seed in range(SEEDS):
        p, decision, churned = calibrated_window(seed)
        estimated = estimated_metrics(p, decision)
        measured = measured_metrics(churned, p, decision)
        for metric in ESTIMATED_METRICS:
            errors[metric].append(estimated[metric] - measured[metric])  # type: ignore[operator]
    for metric, values in errors.items():
        assert np.mean(np.abs(values)) <= TOLERANCE, metric
        assert abs(np.mean(values)) <= BIAS, metric


def test_the_estimate_rests_on_calibration() -> None:
    """Labels drawn from p² (the model over-predicts churn): the estimate, which trusts p,
    misses by more than the tolerance; only labels reveal it."""
    misses = []
    for seed in range(SEEDS):
        p, decision, _ = calibrated_window(seed)
        churned = np.random.default_rng(100 + seed).random(p.size) < p**2
        estimated = estimated_metrics(p, decision)["precision"]
        misses.append(estimated - measured_metrics(churned, p, decision)["precision"])  # type: ignore[operator]
    assert np.mean(misses) > 3 * TOLERANCE


def test_the_sampling_errors_are_the_spread_of_measured_figures_over_label_draws() -> None:
    """One window's probabilities, 300 label draws: the stated standard error against the
    spread the measured figures actually have (ROC-AUC's formula is wide, never narrow)."""
    p, decision, _ = calibrated_window(seed=0)
    stated = sampling_errors(p, decision)
    draws = [
        measured_metrics(np.random.default_rng(1000 + seed).random(p.size) < p, p, decision)
        for seed in range(300)
    ]
    for metric in ESTIMATED_METRICS:
        spread = np.std([draw[metric] for draw in draws])
        low, high = (1.0, 1.6) if metric == "roc_auc" else (0.85, 1.15)
        assert low <= stated[metric] / spread <= high, metric  # type: ignore[operator]
    estimated = estimated_metrics(p, decision)
    for metric in ESTIMATED_METRICS:
        within = [
            abs(draw[metric] - estimated[metric]) <= 2 * stated[metric]  # type: ignore[operator]
            for draw in draws
        ]
        assert np.mean(within) >= 0.9, metric


REAL_MODEL_TOLERANCE = 0.03
"""README: the trained model's estimate against the mean measured figure of fresh
customers whose labels are drawn from their true churn probability."""


def test_the_trained_models_estimate_lands_within_tolerance(trained: TrainingOutcome) -> None:
    """Fresh synthetic customers (not the training table), the model's probabilities and
    decisions, labels drawn ten times from the generator's true probability: what is left
    between estimate and measured figure is the model's own calibration error."""
    frame, _ = prepare_table(generate_customers(20_000, seed=99))
    features, _ = split_xy(frame)
    p = trained.predictor.predict_proba(encode_frame(features, ()))
    decision = p >= trained.predictor.threshold
    truth = frame[TRUE_PROBABILITY_COLUMN].to_numpy()
    estimated = estimated_metrics(p, decision)
    draws = [
        measured_metrics(np.random.default_rng(seed).random(p.size) < truth, p, decision)
        for seed in range(10)
    ]
    for metric in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        measured = np.mean([draw[metric] for draw in draws])
        assert abs(estimated[metric] - measured) <= REAL_MODEL_TOLERANCE, metric  # type: ignore[operator]
