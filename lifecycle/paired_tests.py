"""Paired tests of a challenger against the champion on the same labelled customers.

Both models score the same customers, so their errors are correlated: a paired test uses
that correlation and needs far fewer labels than comparing two independent figures.

- ROC-AUC: DeLong, DeLong and Clarke-Pearson (1988), computed the fast way of Sun and Xu
  (2014): the structural components come from midranks, O(n log n) instead of O(m·n).
- F1 at each model's own threshold, Brier score and top-decile lift: a paired bootstrap,
  the same resampled customers for both models, vectorised as a (rounds × customers) matrix
  of how often each customer is drawn.

Every test is one-sided non-inferiority: H0 "the challenger is worse by at least the
margin". Intervals are two-sided at 1 − 2·alpha, so the decision bound of the test is the
interval's lower bound (upper for Brier, where lower is better).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata

from core.calibration import as_arrays

TOP_SHARE = 0.1
"""Top-decile lift: churn rate among the 10 % highest-scored customers over the base rate."""

_CELLS_PER_CHUNK = 4_000_000
"""Bootstrap rounds are drawn in chunks of at most this many (round, customer) cells, so
memory stays near 32 MB whatever the number of labelled customers."""


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's paired comparison of two ROC-AUCs; ``difference`` = challenger − champion."""

    auc_champion: float
    auc_challenger: float
    difference: float
    variance: float
    se: float
    margin: float
    z: float
    p_value: float
    """One-sided, H0: difference <= −margin."""
    ci_low: float
    ci_high: float
    confidence: float


@dataclass(frozen=True)
class BootstrapComparison:
    """A paired-bootstrap comparison of one metric; ``difference`` = challenger − champion."""

    metric: str
    higher_is_better: bool
    champion: float
    challenger: float
    difference: float
    margin: float
    p_value: float
    """One-sided, H0: the challenger is worse by at least ``margin``."""
    ci_low: float
    ci_high: float
    confidence: float
    rounds: int


# --- DeLong --------------------------------------------------------------------------------


def _structural_components(
    y: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong's components V10 (per churner) and V01 (per stayer), one row a model.

    Sun and Xu's theorem: with midranks of the churners among themselves (tx), of the
    stayers among themselves (ty) and of everyone together (tz), a churner's component is
    (tz − tx)/n (the share of stayers it outranks, ties half) and a stayer's is
    1 − (tz − ty)/m (the share of churners that outrank it).
    """
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    tx = rankdata(pos, axis=1)
    ty = rankdata(neg, axis=1)
    tz = rankdata(np.hstack([pos, neg]), axis=1)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    aucs = v10.mean(axis=1)
    return aucs, v10, v01


def delong_covariance(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUCs of each row of ``scores`` (models × customers) and their covariance matrix."""
    y = np.asarray(y_true)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != y.shape[0]:
        raise ValueError(f"scores must be (models, {y.shape[0]}), got {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must contain only 0 and 1")
    m, n = int((y == 1).sum()), int((y == 0).sum())
    if m < 2 or n < 2:
        raise ValueError("DeLong needs at least two customers of both classes")
    aucs, v10, v01 = _structural_components(y, s)
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_test(
    y_true: np.ndarray,
    p_champion: np.ndarray,
    p_challenger: np.ndarray,
    *,
    margin: float,
    alpha: float,
) -> DeLongResult:
    """Is the challenger's ROC-AUC non-inferior to the champion's on the same customers?"""
    aucs, cov = delong_covariance(y_true, np.vstack([p_champion, p_challenger]))
    diff = float(aucs[1] - aucs[0])
    variance = max(float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]), 0.0)
    se = math.sqrt(variance)
    if se > 0:
        z = (diff + margin) / se
        p = float(norm.sf(z))
    else:  # identical rankings: the difference is known exactly
        z = math.copysign(math.inf, diff + margin) if diff + margin != 0 else 0.0
        p = 0.0 if diff > -margin else 1.0
    half = float(norm.ppf(1.0 - alpha)) * se
    return DeLongResult(
        auc_champion=float(aucs[0]),
        auc_challenger=float(aucs[1]),
        difference=diff,
        variance=variance,
        se=se,
        margin=margin,
        z=float(z),
        p_value=p,
        ci_low=diff - half,
        ci_high=diff + half,
        confidence=1.0 - 2.0 * alpha,
    )


# --- paired bootstrap ----------------------------------------------------------------------


def _draw_counts(rng: np.random.Generator, rounds: int, n: int) -> np.ndarray:
    """How many times each customer is drawn in each round (rounds × n): n draws a round."""
    idx = rng.integers(0, n, size=(rounds, n))
    idx += np.arange(rounds)[:, None] * n
    counts = np.bincount(idx.ravel(), minlength=rounds * n).reshape(rounds, n)
    return counts.astype(np.float64)  # float once, not at every product below


def _f1(counts: np.ndarray, y: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """F1 of the churn class per round; 0 where nobody is flagged nor churns (sklearn's)."""
    tp = counts @ (flagged & (y == 1)).astype(np.float64)
    fp = counts @ (flagged & (y == 0)).astype(np.float64)
    fn = counts @ (~flagged & (y == 1)).astype(np.float64)
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)


def _brier(counts: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Mean squared error of the probability per round."""
    return (counts @ (p - y) ** 2) / counts.sum(axis=1)


def _top_lift(counts: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Top-decile lift per round, without sorting each round.

    Customers are ordered once by score (highest first, ties by position); a round's top
    k = ceil(10 % of its draws) are then the first draws in that order, so each customer
    contributes min(its draws, what is left of k before it). Only a prefix of the order can
    hold them: the first 10 % + 8 SD of the customers (every round of n draws reaches k
    there but with a probability below 1e-15; a round that does not is redone in full).
    NaN for a round with no churner.
    """
    n = p.size
    order = np.argsort(-p, kind="stable")
    ys = y[order].astype(np.float64)
    total = counts.sum(axis=1)
    k = np.ceil(TOP_SHARE * total)
    width = min(n, math.ceil(TOP_SHARE * n + 8.0 * math.sqrt(n) + 1))
    positives = _top_positives(counts[:, order[:width]], ys[:width], k)
    short = np.flatnonzero(counts[:, order[:width]].sum(axis=1) < k)
    if short.size:
        positives[short] = _top_positives(counts[short][:, order], ys, k[short])
    base = (counts @ y.astype(np.float64)) / total
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(base > 0, (positives / k) / base, np.nan)


def _top_positives(c: np.ndarray, ys: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Churners among each round's first k draws, ``c`` being draw counts in score order."""
    before = np.cumsum(c, axis=1) - c
    taken = np.clip(k[:, None] - before, 0, c)
    return taken @ ys


def _metric(
    name: str, counts: np.ndarray, y: np.ndarray, p: np.ndarray, threshold: float
) -> np.ndarray:
    if name == "f1":
        return _f1(counts, y, p >= threshold)
    if name == "brier":
        return _brier(counts, y, p)
    if name == "top_decile_lift":
        return _top_lift(counts, y, p)
    raise ValueError(f"no bootstrap metric {name!r}")


BOOTSTRAP_METRICS: dict[str, bool] = {"f1": True, "brier": False, "top_decile_lift": True}
"""The bootstrapped metrics and whether higher is better."""


def paired_bootstrap(
    y_true: np.ndarray,
    p_champion: np.ndarray,
    p_challenger: np.ndarray,
    *,
    thresholds: tuple[float, float],
    margins: dict[str, float],
    alpha: float,
    rounds: int,
    seed: int,
) -> dict[str, BootstrapComparison]:
    """Non-inferiority of each metric in ``margins`` by a paired bootstrap over customers.

    ``thresholds`` are (champion, challenger): each model's F1 at its own decision cut.
    The p-value is the share of rounds (+1, of rounds + 1, so never 0) in which the
    challenger is worse by at least the margin: the percentile interval inverted, so p <
    alpha exactly when the interval's decision bound clears the margin.
    """
    y, p0 = as_arrays(y_true, p_champion)
    _, p1 = as_arrays(y_true, p_challenger)
    if p0.shape != p1.shape:
        raise ValueError("both models must score the same customers")
    names = [m for m in BOOTSTRAP_METRICS if m in margins]
    n = y.size
    ones = np.ones((1, n))
    point = {
        m: (_metric(m, ones, y, p0, thresholds[0])[0], _metric(m, ones, y, p1, thresholds[1])[0])
        for m in names
    }
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CELLS_PER_CHUNK // n)
    diffs: dict[str, list[np.ndarray]] = {m: [] for m in names}
    for start in range(0, rounds, per_chunk):
        counts = _draw_counts(rng, min(per_chunk, rounds - start), n)
        for m in names:
            d = _metric(m, counts, y, p1, thresholds[1]) - _metric(m, counts, y, p0, thresholds[0])
            diffs[m].append(d)
    return {m: _summarise(m, point[m], np.concatenate(diffs[m]), margins[m], alpha) for m in names}


def _summarise(
    name: str, point: tuple[float, float], d: np.ndarray, margin: float, alpha: float
) -> BootstrapComparison:
    """Difference, percentile interval and one-sided p-value of one metric's rounds."""
    higher = BOOTSTRAP_METRICS[name]
    d = d[np.isfinite(d)]
    worse = (d <= -margin) if higher else (d >= margin)
    low, high = np.quantile(d, [alpha, 1.0 - alpha])
    return BootstrapComparison(
        metric=name,
        higher_is_better=higher,
        champion=float(point[0]),
        challenger=float(point[1]),
        difference=float(point[1] - point[0]),
        margin=margin,
        p_value=float((worse.sum() + 1) / (d.size + 1)),
        ci_low=float(low),
        ci_high=float(high),
        confidence=1.0 - 2.0 * alpha,
        rounds=int(d.size),
    )
