"""Measured performance of served predictions against the labels that judge them.

The decision metrics score the decision the service actually returned (`will_churn`), not
a threshold re-applied here: the figure is what the callers got. Computed with
scikit-learn itself, so a figure here is scikit-learn's on the same rows; a figure that is
undefined on the rows (ROC-AUC with one class, precision with no predicted churner) is
None rather than a made-up 0.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from core.calibration import expected_calibration_error

METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "roc_auc", "brier", "ece")
"""Measured per model version and window, in this order; the names of training's metrics."""

LOWER_IS_BETTER: frozenset[str] = frozenset({"brier", "ece"})
"""Error metrics: a degradation is a rise, and a bar on them is a ceiling."""


def _defined(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def measured_metrics(
    churned: np.ndarray, probability: np.ndarray, decision: np.ndarray
) -> dict[str, float | None]:
    """Every metric of :data:`METRICS` on labelled rows (0/1 labels and decisions)."""
    y = np.asarray(churned).astype(np.int64)
    p = np.asarray(probability, dtype=np.float64)
    d = np.asarray(decision).astype(np.int64)
    if y.size == 0:
        return dict.fromkeys(METRICS)
    both_classes = np.unique(y).size == 2
    nan = np.nan
    return {
        "accuracy": float(accuracy_score(y, d)),
        "precision": _defined(precision_score(y, d, zero_division=nan)),
        "recall": _defined(recall_score(y, d, zero_division=nan)),
        "f1": _defined(f1_score(y, d, zero_division=nan)),
        "roc_auc": float(roc_auc_score(y, p)) if both_classes else None,
        "brier": float(brier_score_loss(y, p, pos_label=1)),
        "ece": expected_calibration_error(y, p),
    }
