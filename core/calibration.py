"""Calibration figures shared by training (its report and plot) and monitoring (the live
ECE): one binning definition, so a live figure compares with the stored one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def as_arrays(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return labels as int and probabilities as float, refusing malformed input early.

    sklearn's own errors for these cases are cryptic or absent (a probability of 1.3
    silently shifts every metric), so they are caught here with a clear message.
    """
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or y.shape != p.shape:
        raise ValueError(f"y_true and proba must be 1-D of equal length, got {y.shape}, {p.shape}")
    if y.size == 0:
        raise ValueError("cannot evaluate an empty set of predictions")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must contain only 0 and 1")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("proba must be finite probabilities in [0, 1]")
    return y.astype(np.int64), p


@dataclass(frozen=True)
class ReliabilityTable:
    """Per-bin calibration statistics; shared by the ECE and the reliability diagram."""

    bin_edges: np.ndarray
    """``n_bins + 1`` equal-width edges on [0, 1]."""
    counts: np.ndarray
    """Number of predictions in each bin."""
    mean_proba: np.ndarray
    """Mean predicted probability per bin (NaN for empty bins)."""
    fraction_positive: np.ndarray
    """Observed churn rate per bin (NaN for empty bins)."""


def reliability_table(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> ReliabilityTable:
    """Bin predictions into equal-width bins; bin ``i`` is ``[i/n, (i+1)/n)``, the last closed.

    One binning definition for the ECE and the calibration plot, so the number in the
    report is the picture in the plot.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    y, p = as_arrays(y_true, proba)
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(counts > 0, sum_p / counts, np.nan)
        frac_y = np.where(counts > 0, sum_y / counts, np.nan)
    return ReliabilityTable(np.linspace(0.0, 1.0, n_bins + 1), counts, mean_p, frac_y)


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = 10) -> float:
    """Weighted mean gap between predicted and observed churn rate over non-empty bins.

    Risk levels and expected-loss figures downstream read the probability itself, not
    just its rank, so calibration is tracked alongside discrimination.
    """
    table = reliability_table(y_true, proba, n_bins)
    filled = table.counts > 0
    gaps = np.abs(table.fraction_positive[filled] - table.mean_proba[filled])
    weights = table.counts[filled] / table.counts.sum()
    return float(np.sum(weights * gaps))
