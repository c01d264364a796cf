"""Evaluation plots written as PNG files next to the evaluation report.

Figures are built as ``matplotlib.figure.Figure`` objects rendered by the Agg canvas,
never through ``pyplot``: no global figure registry, no backend switch, no GUI, so this is
safe in training jobs, tests and worker threads alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from core.calibration import expected_calibration_error, reliability_table

TOP_FEATURES = 20
"""Bars shown in the feature-importance plot."""

_DPI = 110


def _new_figure(width: float = 6.0, height: float = 5.0) -> Figure:
    """A figure bound to the Agg canvas, independent of pyplot's state."""
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def plot_roc(y_true: np.ndarray, proba: np.ndarray, path: Path) -> Path:
    """ROC curve with the chance diagonal; AUC in the title."""
    fpr, tpr, _ = roc_curve(y_true, proba)
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate")
    ax.set_title(f"ROC curve (AUC = {roc_auc_score(y_true, proba):.3f})")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_precision_recall(
    y_true: np.ndarray, proba: np.ndarray, threshold: float, path: Path
) -> Path:
    """Precision-recall curve, the churn base rate, and the operating point at ``threshold``."""
    precision, recall, _ = precision_recall_curve(y_true, proba)
    y_pred = proba >= threshold
    tp = float(np.sum(y_pred & (y_true == 1)))
    op_precision = tp / max(float(y_pred.sum()), 1.0)
    op_recall = tp / max(float(np.sum(y_true == 1)), 1.0)
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.plot(recall, precision, label="model")
    ax.axhline(float(np.mean(y_true)), linestyle="--", color="grey", label="base rate")
    ax.scatter([op_recall], [op_precision], color="red", zorder=3, label=f"t = {threshold:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="Recall", ylabel="Precision")
    ax.set_title(f"Precision-recall (AP = {average_precision_score(y_true, proba):.3f})")
    ax.legend(loc="lower left")
    return _save(fig, path)


def plot_calibration(y_true: np.ndarray, proba: np.ndarray, path: Path, n_bins: int = 10) -> Path:
    """Reliability diagram over a histogram of predictions, using the ECE's own bins."""
    table = reliability_table(y_true, proba, n_bins)
    filled = table.counts > 0
    fig = _new_figure(6.0, 6.5)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    top.plot(table.mean_proba[filled], table.fraction_positive[filled], marker="o", label="model")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="Observed churn rate")
    ece = expected_calibration_error(y_true, proba, n_bins)
    top.set_title(f"Calibration (ECE = {ece:.3f})")
    top.legend(loc="upper left")
    bottom.hist(proba, bins=table.bin_edges, color="tab:blue", edgecolor="white")
    bottom.set(xlabel="Predicted churn probability", ylabel="Customers")
    return _save(fig, path)


def plot_confusion_matrix(
    y_true: np.ndarray, proba: np.ndarray, threshold: float, path: Path
) -> Path:
    """Confusion matrix at ``threshold`` with the count written in each cell."""
    matrix = confusion_matrix(y_true, (proba >= threshold).astype(np.int64), labels=[0, 1])
    fig = _new_figure(5.0, 4.5)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    labels = ["retained (0)", "churned (1)"]
    ax.set_xticks([0, 1], labels)
    ax.set_yticks([0, 1], labels)
    ax.set(xlabel="Predicted", ylabel="Actual")
    ax.set_title(f"Confusion matrix (threshold = {threshold:.3f})")
    midpoint = matrix.max() / 2
    for (row, col), count in np.ndenumerate(matrix):
        colour = "white" if count > midpoint else "black"
        ax.text(col, row, f"{count:,}", ha="center", va="center", color=colour)
    return _save(fig, path)


def plot_feature_importance(importance: dict[str, float], path: Path) -> Path:
    """Top features by importance as horizontal bars, largest at the top."""
    ranked = sorted(importance.items(), key=lambda item: item[1], reverse=True)[:TOP_FEATURES]
    fig = _new_figure(7.0, max(3.0, 0.3 * len(ranked) + 1.5))
    ax = fig.add_subplot()
    if ranked:
        names, values = zip(*reversed(ranked), strict=True)
        ax.barh(names, values, color="tab:blue")
    else:
        ax.text(0.5, 0.5, "no feature importance available", ha="center", va="center")
    ax.set(xlabel="Importance", ylabel="Feature")
    ax.set_title(f"Feature importance (top {min(len(ranked), TOP_FEATURES)})")
    return _save(fig, path)


def write_evaluation_plots(
    y_true: np.ndarray,
    proba: np.ndarray,
    threshold: float,
    importance: dict[str, float],
    out_dir: Path,
) -> dict[str, Path]:
    """Write the five evaluation PNGs into ``out_dir`` and return name → path.

    Names are the file stems (``roc``, ``precision_recall``, ...), so callers can log
    them as MLflow artifacts or link them from a report without knowing the layout.
    """
    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(proba, dtype=np.float64)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers: dict[str, Callable[[Path], Path]] = {
        "roc": lambda path: plot_roc(y, p, path),
        "precision_recall": lambda path: plot_precision_recall(y, p, threshold, path),
        "calibration": lambda path: plot_calibration(y, p, path),
        "confusion_matrix": lambda path: plot_confusion_matrix(y, p, threshold, path),
        "feature_importance": lambda path: plot_feature_importance(importance, path),
    }
    return {name: write(out_dir / f"{name}.png") for name, write in writers.items()}
