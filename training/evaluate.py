"""Evaluation: metrics, decision threshold and calibration of churn probabilities.

Pure functions over numpy arrays, so the same code scores out-of-fold predictions during
training, the held-out test set, and anything a notebook or monitor job hands it. ``y_true``
is a 0/1 label array and ``proba`` the calibrated churn probability; a customer is predicted
to churn when ``proba >= threshold`` (the convention of sklearn's ``precision_recall_curve``,
so the threshold chosen there means the same thing here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from core.calibration import as_arrays, expected_calibration_error

if TYPE_CHECKING:
    from core.pipeline.store import StoredPredictor

METRIC_NAMES: tuple[str, ...] = (
    "roc_auc",
    "pr_auc",
    "f1",
    "precision",
    "recall",
    "accuracy",
    "brier",
    "ece",
    "threshold",
)
"""Keys of :func:`compute_metrics`, in the order they are logged."""

_THRESHOLD_EPS = 1e-6


# --- input checks --------------------------------------------------------------------------


def _require_both_classes(y: np.ndarray) -> None:
    """Ranking metrics and F1-optimal thresholds are undefined with a single class."""
    if np.unique(y).size < 2:
        raise ValueError("y_true must contain both classes (0 and 1)")


# --- threshold -----------------------------------------------------------------------------


def choose_threshold(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Return the cut on ``proba`` that maximises F1 of the churn class.

    Meant for out-of-fold predictions, so the threshold is not tuned on the test set.
    Ties go to the lowest such threshold (more churners caught at equal F1). The result
    is clipped into the open interval (0, 1) so it is always a usable cut.
    """
    y, p = as_arrays(y_true, proba)
    _require_both_classes(y)
    precision, recall, thresholds = precision_recall_curve(y, p)
    # The last (precision=1, recall=0) point has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = float(thresholds[int(np.argmax(f1))])
    return float(np.clip(best, _THRESHOLD_EPS, 1.0 - _THRESHOLD_EPS))


# --- metrics -------------------------------------------------------------------------------


def compute_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Score probabilities (ranking, calibration) and decisions at ``threshold`` in one dict.

    Keys are exactly :data:`METRIC_NAMES`, so runs can be compared and logged to MLflow
    without key juggling; the threshold is included because the decision metrics are
    meaningless without it.
    """
    y, p = as_arrays(y_true, proba)
    _require_both_classes(y)
    y_pred = (p >= threshold).astype(np.int64)
    metrics = {
        "roc_auc": roc_auc_score(y, p),
        "pr_auc": average_precision_score(y, p),
        "f1": f1_score(y, y_pred, zero_division=0),
        "precision": precision_score(y, y_pred, zero_division=0),
        "recall": recall_score(y, y_pred, zero_division=0),
        "accuracy": accuracy_score(y, y_pred),
        "brier": brier_score_loss(y, p),
        "ece": expected_calibration_error(y, p),
        "threshold": threshold,
    }
    return {name: float(metrics[name]) for name in METRIC_NAMES}


def _json_safe(value: Any) -> Any:
    """Turn numpy scalars and nested containers into plain Python for ``json.dumps``."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


@dataclass(frozen=True)
class EvaluationReport:
    """Everything written to ``evaluation.json`` for one model on one data set."""

    metrics: dict[str, float]
    confusion_matrix: list[list[int]]
    """Rows are actual 0/1, columns predicted 0/1."""
    classification_report: dict[str, Any] = field(default_factory=dict)
    """sklearn's ``classification_report(..., output_dict=True)``."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python copy, safe for ``json.dumps`` and MLflow ``log_dict``."""
        return _json_safe(
            {
                "metrics": self.metrics,
                "confusion_matrix": self.confusion_matrix,
                "classification_report": self.classification_report,
            }
        )


def evaluate_predictions(
    y_true: np.ndarray, proba: np.ndarray, threshold: float
) -> EvaluationReport:
    """Build the full report (metrics, confusion matrix, per-class report) at ``threshold``."""
    y, p = as_arrays(y_true, proba)
    y_pred = (p >= threshold).astype(np.int64)
    matrix = confusion_matrix(y, y_pred, labels=[0, 1])
    report = classification_report(y, y_pred, labels=[0, 1], output_dict=True, zero_division=0)
    return EvaluationReport(
        metrics=compute_metrics(y, p, threshold),
        confusion_matrix=[[int(c) for c in row] for row in matrix],
        classification_report=_json_safe(report),
    )


def evaluate_stored_model(
    stored: StoredPredictor, table: pd.DataFrame, holdout: bool = False
) -> EvaluationReport:
    """Score a stored model on a labelled canonical table, at the model's own threshold.

    With `holdout`, only the rows training held out (same split seed and test size, read
    from the model's metadata), so the figures reproduce training's.
    """
    from core.pipeline.encode import encode_frame
    from training.data import prepare_table, split_holdout, split_xy

    predictor = stored.predictor
    frame, _ = prepare_table(table, predictor.extras)
    features, y = split_xy(frame)
    rows = np.arange(len(y))
    if holdout:
        training = stored.metadata["training"]
        _, rows = split_holdout(y, float(training["test_size"]), int(training["seed"]))
    proba = predictor.predict_proba(encode_frame(features.iloc[rows], predictor.extras))
    return evaluate_predictions(y[rows], proba, predictor.threshold)
