"""scikit-learn's own figures on labelled rows: what `churn performance` must give back."""

from __future__ import annotations

from collections.abc import Mapping

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


def sklearn_figures(rows: Mapping[str, np.ndarray]) -> dict[str, float]:
    """`rows`: labels `y`, probabilities `p`, decisions `d` (0/1)."""
    y, p, d = rows["y"], rows["p"], rows["d"]
    return {
        "accuracy": accuracy_score(y, d),
        "precision": precision_score(y, d),
        "recall": recall_score(y, d),
        "f1": f1_score(y, d),
        "roc_auc": roc_auc_score(y, p),
        "brier": brier_score_loss(y, p),
        "ece": expected_calibration_error(y, p),
    }
