"""Risk bands and the model's decision never contradict each other (issue 13, point 15)."""

from __future__ import annotations

import numpy as np
import pytest

from core.risk import RISK_LEVELS, risk_bands, risk_levels
from core.settings import Settings
from serving.scoring import recommendation

PROBABILITIES = np.concatenate(
    [np.linspace(0.0, 1.0, 2001), np.array([0.3, 0.6, 0.15, 0.45, 0.7, 0.999999])]
)
THRESHOLDS = [0.0, 0.05, 0.15, 0.29999, 0.3, 0.45, 0.6, 0.60001, 0.7, 0.95, 1.0]
BANDS = [(0.3, 0.6), (0.1, 0.2), (0.8, 0.9), (0.5, 0.5), (0.0, 1.0)]


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize(("medium", "high"), BANDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_will_churn_is_never_low_and_high_always_churns(
    threshold: float, medium: float, high: float, dtype: type
) -> None:
    settings = Settings(risk_medium_from=medium, risk_high_from=high)
    # Probabilities at the threshold itself, and just either side of it, in this dtype.
    at = np.array([threshold], dtype=dtype)
    near = np.concatenate([np.nextafter(at, -1), at, np.nextafter(at, 2)])
    probability = np.clip(np.concatenate([PROBABILITIES.astype(dtype), near]), 0, 1)
    will_churn = probability >= threshold  # exactly as score_batch decides
    levels = np.array(RISK_LEVELS, dtype=object)[risk_levels(probability, settings, threshold)]
    assert not np.any(will_churn & (levels == "low"))
    assert not np.any(~will_churn & (levels == "high"))
    for level in set(levels[will_churn].tolist()):
        assert not recommendation(level, None).startswith("No action")


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_bands_move_only_as_far_as_the_threshold_needs(threshold: float) -> None:
    settings = Settings(risk_medium_from=0.3, risk_high_from=0.6)
    medium, high = risk_bands(threshold, settings)
    assert medium == min(0.3, threshold) and high == max(0.6, threshold)
    assert medium <= threshold <= high


def test_the_demo_models_contradiction_is_gone() -> None:
    # The reported answer: a model with a low threshold said "will churn" at 0.25, which
    # the fixed cut-offs (0.3 / 0.6) called "low" with "No action needed".
    level = RISK_LEVELS[int(risk_levels(np.array([0.25]), Settings(), threshold=0.2)[0])]
    assert level == "medium"
