"""The promotion verdict: does the challenger replace the champion?

One rule, stated and recorded with its figures. On labelled customers both models scored:

1. refused when fewer churners than the minimum (no figure computed: too little evidence);
2. refused unless every watched metric (those with a margin) is non-inferior at ``alpha``
   — ROC-AUC by DeLong, F1 / Brier / top-decile lift by the paired bootstrap;
3. refused when the challenger's ROC-AUC is below the champion's (non-inferior is not
   enough to swap a model that ranks worse);
4. otherwise promoted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from core.calibration import as_arrays
from core.settings import PROMOTION_METRICS, get_settings
from lifecycle.paired_tests import (
    BootstrapComparison,
    DeLongResult,
    delong_test,
    paired_bootstrap,
)


@dataclass(frozen=True)
class PromotionDecision:
    """The verdict, the rule that decided it, and every figure behind it (JSON-ready)."""

    promote: bool
    rule: str
    """``too_few_churners``, ``not_non_inferior``, ``auc_worse`` or ``non_inferior``."""
    reasons: tuple[str, ...]
    customers: int
    churners: int
    min_churners: int
    alpha: float
    margins: Mapping[str, float]
    thresholds: tuple[float, float]
    """(champion, challenger) decision cuts, for F1."""
    rounds: int
    seed: int
    roc_auc: DeLongResult | None
    bootstrap: tuple[BootstrapComparison, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: for the audit trail and ``churn promote``'s output."""
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        out["margins"] = dict(self.margins)
        out["thresholds"] = {"champion": self.thresholds[0], "challenger": self.thresholds[1]}
        out["bootstrap"] = {b.metric: asdict(b) for b in self.bootstrap}
        return out


def promotion_decision(
    y_true: np.ndarray,
    p_champion: np.ndarray,
    p_challenger: np.ndarray,
    thresholds: tuple[float, float],
    margins: Mapping[str, float] | None = None,
    alpha: float | None = None,
    min_churners: int | None = None,
    *,
    rounds: int | None = None,
    seed: int | None = None,
) -> PromotionDecision:
    """Apply the promotion rule to two models' probabilities on the same labelled customers.

    Unset arguments come from the settings (``CHURN_PROMOTION_*``).
    """
    settings = get_settings()
    margins = dict(settings.promotion_margins if margins is None else margins)
    alpha = settings.promotion_alpha if alpha is None else alpha
    min_churners = settings.promotion_min_churners if min_churners is None else min_churners
    rounds = settings.promotion_bootstrap_rounds if rounds is None else rounds
    seed = settings.promotion_seed if seed is None else seed
    unknown = set(margins) - set(PROMOTION_METRICS)
    if unknown:
        raise ValueError(f"unknown promotion metrics {sorted(unknown)}")
    y, p0 = as_arrays(y_true, p_champion)
    _, p1 = as_arrays(y_true, p_challenger)
    churners = int(y.sum())
    base: dict[str, Any] = {
        "customers": int(y.size),
        "churners": churners,
        "min_churners": min_churners,
        "alpha": alpha,
        "margins": margins,
        "thresholds": (float(thresholds[0]), float(thresholds[1])),
        "rounds": rounds,
        "seed": seed,
    }
    if churners < min_churners:
        reason = f"{churners} churners among {y.size} labelled customers, {min_churners} needed"
        return PromotionDecision(
            promote=False,
            rule="too_few_churners",
            reasons=(reason,),
            roc_auc=None,
            bootstrap=(),
            **base,
        )
    auc = delong_test(y, p0, p1, margin=margins.get("roc_auc", 0.0), alpha=alpha)
    boot = paired_bootstrap(
        y,
        p0,
        p1,
        thresholds=base["thresholds"],
        margins=margins,
        alpha=alpha,
        rounds=rounds,
        seed=seed,
    )
    failing = []
    if "roc_auc" in margins and auc.p_value >= alpha:
        failing.append(
            f"roc_auc: difference {auc.difference:+.4f}, lower bound {auc.ci_low:+.4f} "
            f"not above −{auc.margin} (DeLong p = {auc.p_value:.3g} ≥ {alpha})"
        )
    failing += [_failure(b, alpha) for b in boot.values() if b.p_value >= alpha]
    if failing:
        rule, promote, reasons = "not_non_inferior", False, tuple(failing)
    elif auc.difference < 0:
        rule, promote = "auc_worse", False
        reasons = (
            f"roc_auc: challenger {auc.auc_challenger:.4f} below champion "
            f"{auc.auc_champion:.4f} (within the margin, but a worse ranking is not swapped in)",
        )
    else:
        rule, promote = "non_inferior", True
        reasons = (
            f"every watched metric ({', '.join(sorted(margins))}) non-inferior at "
            f"alpha {alpha}; roc_auc {auc.difference:+.4f}",
        )
    return PromotionDecision(
        promote=promote,
        rule=rule,
        reasons=reasons,
        roc_auc=auc,
        bootstrap=tuple(boot.values()),
        **base,
    )


def _failure(b: BootstrapComparison, alpha: float) -> str:
    """Why one bootstrapped metric is not shown non-inferior, with its decision bound."""
    bound, side = (
        (b.ci_low, f"above −{b.margin}")
        if b.higher_is_better
        else (b.ci_high, f"below +{b.margin}")
    )
    return (
        f"{b.metric}: difference {b.difference:+.4f}, bound {bound:+.4f} not {side} "
        f"(bootstrap p = {b.p_value:.3g} ≥ {alpha})"
    )
