"""What a churn probability means to the business: the decision and the risk band.

`/predict` (serving/scoring.py) and `churn score` (batch/) both answer with these, so a
customer scored in batch gets the same `will_churn` and `risk_level` as one scored online.
"""

from __future__ import annotations

import numpy as np

from core.settings import Settings

RISK_LEVELS = ("low", "medium", "high")


def will_churn(probability: np.ndarray, threshold: float) -> np.ndarray:
    """The decision: the probability reaches the model's own threshold."""
    return np.asarray(probability >= threshold)


def risk_bands(threshold: float, settings: Settings) -> tuple[float, float]:
    """Where "medium" and "high" start for a model deciding churn at ``threshold``.

    The configured bands are moved so they cannot contradict the decision: "medium"
    starts at or below the threshold and "high" at or above it. So a customer the model
    says will churn is at least "medium" (never "low" with "no action"), and a "high"
    customer is always one it says will churn.
    """
    return (
        min(settings.risk_medium_from, threshold),
        max(settings.risk_high_from, threshold),
    )


def risk_levels(probability: np.ndarray, settings: Settings, threshold: float) -> np.ndarray:
    """Index into `RISK_LEVELS` for each probability, by the bands around ``threshold``."""
    return levels_in_bands(probability, risk_bands(threshold, settings))


def levels_in_bands(probability: np.ndarray, bands: tuple[float, float]) -> np.ndarray:
    """Index into `RISK_LEVELS` for each probability, given `risk_bands`' two edges (what a
    batch job ships to its workers instead of the whole settings).

    The bands take the probabilities' dtype, as ``probability >= threshold`` does, so
    a probability at the threshold falls on the same side for the band and the decision.
    """
    edges = np.asarray(bands, dtype=probability.dtype)
    return np.searchsorted(edges, probability, side="right")
