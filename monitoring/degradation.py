"""When a measured figure counts as a degradation of the model, worth retraining for.

Two rules, either suffices: the figure is worse than an absolute bar (a floor, or for the
error metrics brier and ece a ceiling), or worse than the figure training measured on its
held-out rows by more than a margin (the design: accuracy 0.89 in training, 0.85 live,
with a margin of 0.03 → degraded).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from monitoring.measure import LOWER_IS_BETTER, METRICS

_EPSILON = 1e-9
"""Float slack: a drop of exactly the margin (0.89 − 0.86 with 0.03) is not a degradation."""


@dataclass(frozen=True)
class Degradation:
    """One measured figure past its limit: `rule` is ``bar`` or ``drop`` (from training)."""

    metric: str
    measured: float
    limit: float
    """The bar, or training's figure less (plus, for error metrics) the margin."""
    rule: str
    training: float | None = None


def find_degradations(
    measured: Mapping[str, float | None],
    training: Mapping[str, float] | None,
    *,
    max_drop: float,
    drop_metrics: Collection[str],
    bars: Mapping[str, float],
) -> list[Degradation]:
    """The bar rule on every barred metric, the drop rule on the `drop_metrics`; metrics
    without a measured figure (too few labels, undefined) are never degraded."""
    found: list[Degradation] = []
    for metric in METRICS:
        value = measured.get(metric)
        if value is None:
            continue
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0  # +1: higher is better
        bar = bars.get(metric)
        reference = training.get(metric) if training else None
        if bar is not None and sign * (value - bar) < -_EPSILON:
            found.append(Degradation(metric, value, bar, "bar", reference))
        if metric in drop_metrics and reference is not None:
            limit = reference - sign * max_drop
            if sign * (value - limit) < -_EPSILON:
                found.append(Degradation(metric, value, limit, "drop", reference))
    return found
