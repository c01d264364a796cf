"""The promotion test's statistics against independent computations and simulations.

DeLong is checked against the O(m·n) structural components written from the 1988 paper
(here, not in the product), scikit-learn's ROC-AUC and pROC's published example; the
p-value's calibration and the bootstrap intervals' coverage on simulated data with known
population figures; the verdict on models built to be better, worse or under-labelled.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.stats import norm
from sklearn.metrics import brier_score_loss, f1_score, roc_auc_score

from core.settings import Settings
from lifecycle.paired_tests import (
    BootstrapComparison,
    _draw_counts,
    _metric,
    delong_covariance,
    delong_test,
    paired_bootstrap,
)
from lifecycle.promotion import promotion_decision

# --- helpers -------------------------------------------------------------------------------


def _delong_1988(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong, DeLong and Clarke-Pearson (1988), eqs. for V10, V01, S10, S01, pair by pair."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    # psi(X, Y) = 1 if X > Y, 1/2 if equal, 0 otherwise: one (m × n) matrix per model.
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    theta = psi.mean(axis=(1, 2))
    v10 = psi.mean(axis=2)  # per churner
    v01 = psi.mean(axis=1)  # per stayer
    k = scores.shape[0]
    s10 = np.empty((k, k))
    s01 = np.empty((k, k))
    for r in range(k):
        for s in range(k):
            s10[r, s] = ((v10[r] - theta[r]) * (v10[s] - theta[s])).sum() / (m - 1)
            s01[r, s] = ((v01[r] - theta[r]) * (v01[s] - theta[s])).sum() / (n - 1)
    return theta, s10 / m + s01 / n


def _population(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Customers' true churn probability q (base rate ≈ 0.27) and a latent score x."""
    x = rng.normal(size=n)
    q = 1.0 / (1.0 + np.exp(-(-1.3 + 1.4 * x)))
    return x, q


def _model(x: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """A calibrated-looking model: the latent score blurred by ``noise``."""
    return 1.0 / (1.0 + np.exp(-(-1.3 + 1.4 * (x + rng.normal(scale=noise, size=x.size)))))


def _sample(seed: int, n: int, noises: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x, q = _population(rng, n)
    y = (rng.random(n) < q).astype(np.int64)
    return (y, *(_model(x, rng, s) for s in noises))


# --- DeLong --------------------------------------------------------------------------------


@pytest.mark.parametrize("decimals", [None, 1])  # continuous scores, and heavy ties
def test_delong_equals_the_1988_structural_components_and_sklearn(decimals: int | None) -> None:
    y, a, b, c = _sample(3, 600, (0.5, 1.0, 2.0))
    scores = np.vstack([a, b, c])
    if decimals is not None:
        scores = np.round(scores, decimals)
    aucs, cov = delong_covariance(y, scores)
    ref_aucs, ref_cov = _delong_1988(y, scores)
    sk = [roc_auc_score(y, s) for s in scores]
    np.testing.assert_allclose(aucs, sk, rtol=0, atol=1e-12)
    np.testing.assert_allclose(aucs, ref_aucs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, rtol=0, atol=1e-12)
    assert cov[0, 1] > 0  # correlated models: the pairing matters


# pROC's published example (roc.test documentation; Robin et al., BMC Bioinformatics 2011):
# data pROC::aSAH (Turck et al. 2010), 113 patients, outcome "Poor" = 1 (41 of them);
# roc.test(aSAH$outcome, aSAH$s100b, aSAH$wfns) prints
#   "DeLong's test for two correlated ROC curves: Z = -2.209, p-value = 0.02718,
#    AUC of roc1 0.7314, AUC of roc2 0.8237".
_ASAH_POOR = [
    0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0,
    0, 0, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0,
    0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0,
    0,
]  # fmt: skip
_ASAH_S100B = [
    0.13, 0.14, 0.1, 0.04, 0.13, 0.1, 0.47, 0.16, 0.18, 0.1, 0.12, 0.1, 0.44, 0.71,
    0.04, 0.08, 0.49, 0.04, 0.07, 0.33, 0.09, 0.09, 0.07, 0.11, 0.07, 0.17, 0.07, 0.11,
    0.13, 0.19, 0.05, 0.16, 0.41, 0.14, 0.34, 0.35, 0.48, 0.09, 0.96, 0.25, 0.5, 0.46,
    0.16, 0.07, 0.43, 0.45, 0.11, 0.08, 0.09, 0.86, 0.52, 0.08, 0.06, 0.13, 2.07, 0.1,
    0.14, 0.15, 0.07, 0.06, 0.77, 0.05, 0.09, 0.3, 0.03, 0.09, 0.04, 0.23, 0.7, 0.09,
    0.27, 0.71, 0.08, 0.26, 0.08, 0.16, 0.09, 0.13, 0.1, 0.08, 0.11, 0.33, 0.11, 0.28,
    0.07, 0.1, 0.32, 0.22, 0.07, 0.05, 0.24, 0.38, 0.1, 0.15, 0.08, 0.14, 0.1, 0.07,
    0.04, 0.19, 0.56, 0.14, 0.58, 0.32, 0.82, 0.74, 0.15, 0.47, 0.17, 0.44, 0.15, 0.5,
    0.48,
]  # fmt: skip
_ASAH_WFNS = [
    1, 1, 1, 1, 3, 2, 5, 4, 1, 2, 5, 2, 5, 5, 1, 2, 5, 2, 2, 5, 2, 1, 1, 1, 1, 2, 1, 2,
    1, 1, 3, 4, 2, 1, 4, 5, 4, 1, 4, 2, 5, 5, 1, 1, 2, 4, 1, 1, 2, 5, 5, 2, 1, 2, 5, 1,
    2, 2, 2, 1, 5, 1, 1, 2, 5, 2, 1, 4, 5, 2, 4, 4, 1, 4, 1, 2, 1, 4, 2, 1, 2, 3, 2, 4,
    2, 1, 4, 5, 1, 1, 5, 4, 2, 2, 1, 1, 1, 3, 1, 2, 5, 2, 2, 5, 5, 5, 2, 4, 4, 5, 1, 1,
    1,
]  # fmt: skip


def test_delong_reproduces_the_published_proc_example() -> None:
    y = np.array(_ASAH_POOR)
    assert (y.size, int(y.sum())) == (113, 41)
    # WFNS is a 1–5 grade: a score, not a probability, which DeLong does not need.
    s100b, wfns = np.array(_ASAH_S100B), np.array(_ASAH_WFNS, dtype=float)
    r = delong_test(y, s100b, wfns, margin=0.0, alpha=0.05)
    assert round(r.auc_champion, 4) == 0.7314
    assert round(r.auc_challenger, 4) == 0.8237
    # pROC's Z is roc1 − roc2 = champion − challenger; ours is challenger − champion.
    assert round(r.z, 3) == 2.209
    assert round(2 * norm.sf(abs(r.z)), 5) == 0.02718
    assert r.p_value == pytest.approx(norm.sf(r.z))  # one-sided: half the two-sided


def test_delong_p_value_is_calibrated_under_the_null() -> None:
    """Two equally good models (exchangeable noise): p < 0.05 about 5 % of the time."""
    rng = np.random.default_rng(11)
    sims, n = 1000, 400
    x, q = _population(rng, (sims, n))
    y = rng.random((sims, n)) < q
    a = x + rng.normal(size=(sims, n))
    b = x + rng.normal(size=(sims, n))
    p = np.array(
        [delong_test(y[i], a[i], b[i], margin=0.0, alpha=0.05).p_value for i in range(sims)]
    )
    assert 0.035 <= (p < 0.05).mean() <= 0.065
    assert 0.08 <= (p < 0.10).mean() <= 0.12


def test_delong_identical_models_and_bad_input() -> None:
    y, a = _sample(5, 300, (1.0,))
    r = delong_test(y, a, a.copy(), margin=0.01, alpha=0.05)
    assert (r.difference, r.se, r.p_value) == (0.0, 0.0, 0.0)
    assert delong_test(y, a, a.copy(), margin=0.0, alpha=0.05).p_value == 1.0
    with pytest.raises(ValueError, match="both classes"):
        delong_covariance(np.array([1, 0, 0, 0]), np.vstack([[0.1, 0.2, 0.3, 0.4]]))
    with pytest.raises(ValueError, match="0 and 1"):
        delong_covariance(np.array([1, 2, 0, 0]), np.vstack([[0.1, 0.2, 0.3, 0.4]]))


# --- paired bootstrap ----------------------------------------------------------------------


def test_vectorised_rounds_equal_a_per_round_computation() -> None:
    """The draw-count matrix gives, round by round, what resampling rows and sklearn give."""
    y, a = _sample(7, 500, (1.0,))
    counts = _draw_counts(np.random.default_rng(0), 5, y.size)
    assert (counts.sum(axis=1) == y.size).all()
    f1 = _metric("f1", counts, y, a, 0.3)
    brier = _metric("brier", counts, y, a, 0.3)
    lift = _metric("top_decile_lift", counts, y, a, 0.3)
    for r in range(5):
        rows = np.repeat(np.arange(y.size), counts[r].astype(int))
        yr, ar = y[rows], a[rows]
        assert f1[r] == pytest.approx(f1_score(yr, ar >= 0.3), abs=1e-12)
        assert brier[r] == pytest.approx(brier_score_loss(yr, ar), abs=1e-12)
        top = yr[np.argsort(-ar, kind="stable")[: math.ceil(0.1 * yr.size)]]
        assert lift[r] == pytest.approx(top.mean() / yr.mean(), abs=1e-12)


def test_lift_of_a_round_drawn_among_the_lowest_scores() -> None:
    """A round whose draws all miss the high scores is redone over every customer."""
    y, a = _sample(9, 500, (1.0,))
    low = np.argsort(a)[:150]
    low = low[np.argsort(-a[low])][:100]  # the 100 highest of the 150 lowest
    counts = np.zeros((2, y.size))
    counts[0] = 1.0  # an ordinary round: everyone once
    counts[1, low] = 5.0  # 500 draws, none among the top 350 scores
    lift = _metric("top_decile_lift", counts, y, a, 0.3)
    rows = np.repeat(np.arange(y.size), counts[1].astype(int))
    top = y[rows][np.argsort(-a[rows], kind="stable")[:50]]
    assert lift[1] == pytest.approx(top.mean() / y[rows].mean(), abs=1e-12)
    assert lift[0] == pytest.approx(y[np.argsort(-a)[:50]].mean() / y.mean(), abs=1e-12)


def _population_figures(noises: tuple[float, float], t: tuple[float, float]) -> dict[str, float]:
    """Challenger − champion in the population (2 million customers, expected counts)."""
    rng = np.random.default_rng(99)
    x, q = _population(rng, 2_000_000)
    out: dict[str, list[float]] = {"f1": [], "brier": [], "top_decile_lift": []}
    for noise, cut in zip(noises, t, strict=True):
        p = _model(x, rng, noise)
        flagged = p >= cut
        tp, fp, fn = (q * flagged).sum(), ((1 - q) * flagged).sum(), (q * ~flagged).sum()
        out["f1"].append(2 * tp / (2 * tp + fp + fn))
        out["brier"].append(float((q * (1 - p) ** 2 + (1 - q) * p**2).mean()))
        top = np.argsort(-p)[: x.size // 10]
        out["top_decile_lift"].append(q[top].mean() / q.mean())
    return {k: v[1] - v[0] for k, v in out.items()}


def test_bootstrap_intervals_cover_the_population_difference() -> None:
    """90 % intervals (alpha 0.05) hold the population's difference in ~90 % of samples."""
    noises, cuts = (0.6, 0.9), (0.35, 0.3)
    truth = _population_figures(noises, cuts)
    margins = {"f1": 0.0, "brier": 0.0, "top_decile_lift": 0.0}
    covered = {k: 0 for k in margins}
    reps = 200
    for seed in range(reps):
        y, a, b = _sample(1000 + seed, 1500, noises)
        res = paired_bootstrap(
            y, a, b, thresholds=cuts, margins=margins, alpha=0.05, rounds=400, seed=seed
        )
        for k, r in res.items():
            covered[k] += r.ci_low <= truth[k] <= r.ci_high
    for k, hits in covered.items():
        assert 0.84 <= hits / reps <= 0.96, (k, hits / reps, truth[k])


def test_bootstrap_is_seeded_and_brier_is_lower_is_better() -> None:
    y, a, b = _sample(8, 2000, (0.5, 1.5))

    def run(champion: np.ndarray, challenger: np.ndarray) -> dict[str, BootstrapComparison]:
        return paired_bootstrap(
            y,
            champion,
            challenger,
            thresholds=(0.3, 0.3),
            margins={"f1": 0.02, "brier": 0.005},
            alpha=0.05,
            rounds=300,
            seed=4,
        )

    one = run(a, b)
    assert one == run(a, b)
    # b is the noisier model: its Brier is higher (worse), so as challenger it fails...
    assert one["brier"].difference > 0.005 and one["brier"].p_value > 0.5
    # ... and as champion the challenger a is clearly non-inferior.
    rev = run(b, a)
    assert rev["brier"].difference < 0 and rev["brier"].p_value < 0.01


# --- the verdict ---------------------------------------------------------------------------


def test_a_better_challenger_is_promoted() -> None:
    y, champion, challenger = _sample(21, 4000, (1.2, 0.5))
    d = promotion_decision(y, champion, challenger, (0.3, 0.3), rounds=400, seed=1)
    assert d.promote and d.rule == "non_inferior"
    assert d.roc_auc is not None and d.roc_auc.difference > 0
    assert {b.metric for b in d.bootstrap} == {"f1", "brier", "top_decile_lift"}
    assert all(b.p_value < 0.05 for b in d.bootstrap)
    out = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert out["bootstrap"]["brier"]["higher_is_better"] is False
    assert out["thresholds"] == {"champion": 0.3, "challenger": 0.3}
    assert out["margins"] == Settings().promotion_margins


def test_a_clearly_worse_challenger_is_refused() -> None:
    y, champion, challenger = _sample(22, 4000, (0.5, 1.5))
    d = promotion_decision(y, champion, challenger, (0.3, 0.3), rounds=400, seed=1)
    assert not d.promote and d.rule == "not_non_inferior"
    assert any(r.startswith("roc_auc") for r in d.reasons)
    assert any(r.startswith("brier") for r in d.reasons)


def test_a_slightly_worse_ranking_within_the_margins_is_not_swapped_in() -> None:
    y, champion = _sample(23, 6000, (0.5,))
    # The champion's probabilities slightly blurred: a hair worse at ranking, as good
    # on every other figure, and so close that every test shows non-inferiority.
    blur = np.random.default_rng(0).normal(scale=0.01, size=y.size)
    challenger = np.clip(champion + blur, 0.0, 1.0)
    d = promotion_decision(y, champion, challenger, (0.3, 0.3), rounds=400, seed=1)
    assert d.roc_auc is not None and -0.01 < d.roc_auc.difference < 0
    assert not d.promote and d.rule == "auc_worse"


def test_too_few_churners_is_refused_before_any_figure() -> None:
    y, champion, challenger = _sample(24, 600, (1.2, 0.5))  # ≈ 160 churners
    d = promotion_decision(
        y, champion, challenger, (0.3, 0.3), min_churners=200, rounds=400, seed=1
    )
    assert not d.promote and d.rule == "too_few_churners"
    assert d.roc_auc is None and d.bootstrap == ()
    assert f"{int(y.sum())} churners" in d.reasons[0]
    assert json.dumps(d.to_dict(), allow_nan=False)


def test_promotion_settings() -> None:
    s = Settings()
    assert s.promotion_margins == {
        "roc_auc": 0.01,
        "f1": 0.02,
        "brier": 0.005,
        "top_decile_lift": 0.25,
    }
    assert (s.promotion_alpha, s.promotion_min_churners) == (0.05, 200)
    assert s.promotion_bootstrap_rounds == 2000
    with pytest.raises(ValidationError, match="unknown metrics"):
        Settings(promotion_margins={"auc": 0.01})
    with pytest.raises(ValidationError, match=">= 0"):
        Settings(promotion_margins={"f1": -0.01})
