"""The table path for reasons and probabilities gives XGBoost's own numbers.

`SaabasTables` replaces XGBoost's approximate (Saabas) `pred_contribs` and its
`inplace_predict`; these tests train small boosters (with missing values, so that both
default directions occur, and trees deeper than the served model's) and compare.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import xgboost as xgb

from core.pipeline import saabas
from core.pipeline.clean import CustomerCleaner
from core.pipeline.features import ChurnFeatures
from core.pipeline.linear import LinearModel, PlattCalibration
from core.pipeline.predictor import ChurnPredictor
from core.pipeline.saabas import SaabasTables, top_k_by_magnitude

N_FEATURES = 12


def _data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer-valued, continuous and binary columns with ~15% missing: values land exactly
    on thresholds, and NaN goes left in some splits and right in others."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.integers(0, 6, (rows, 4)).astype(float),
            rng.normal(0, 2, (rows, 6)),
            rng.integers(0, 2, (rows, 2)).astype(float),
        ]
    )
    logit = x[:, 0] - x[:, 4] + 0.8 * x[:, 5] * x[:, 10] - 2 + np.nan_to_num(x[:, 1]) * x[:, 11]
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(int)
    x[rng.uniform(size=x.shape) < 0.15] = np.nan
    x[rng.uniform(size=rows) < 0.05, :3] = np.nan
    return x, y


def _booster(depth: int, rounds: int = 40, **params: object) -> xgb.Booster:
    x, y = _data(600, seed=depth)
    settings = {"objective": "binary:logistic", "max_depth": depth, "eta": 0.3, "nthread": 1}
    settings.update(params)
    return xgb.train(settings, xgb.DMatrix(x, y), num_boost_round=rounds)


def _queries(rows: int = 400) -> np.ndarray:
    """Fresh rows, plus the edge cases: all missing, ±0, and huge values."""
    x, _ = _data(rows, seed=99)
    edge = np.full((5, N_FEATURES), np.nan)
    edge[1], edge[2], edge[3], edge[4] = 0.0, -0.0, 1e30, -1e30
    return np.vstack([x, edge])


def _xgb_contributions(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    matrix = xgb.DMatrix(x, nthread=1)
    return booster.predict(matrix, pred_contribs=True, approx_contribs=True)


def _predictor(booster: xgb.Booster, linear_weight: float = 0.5) -> ChurnPredictor:
    # Large scales keep the ±1e30 edge rows from overflowing the linear half's exp.
    coef = np.linspace(-1, 1, N_FEATURES)
    linear = LinearModel(np.zeros(N_FEATURES), np.full(N_FEATURES, 1e28), coef, -1)
    return ChurnPredictor(
        CustomerCleaner(),
        ChurnFeatures(),
        booster,
        PlattCalibration.identity(),
        0.5,
        linear=linear,
        linear_weight=linear_weight,
    )


def _assert_same_top_k(index: np.ndarray, value: np.ndarray, reference: np.ndarray) -> None:
    """Same features as XGBoost's contributions ranked by a stable sort, and the same
    values; a rank may differ only between magnitudes within float rounding (1e-5)."""
    k = index.shape[1]
    order = np.argsort(-np.abs(reference), axis=1, kind="stable")[:, :k]
    expected = np.take_along_axis(reference, order, axis=1)
    np.testing.assert_allclose(value, expected, atol=1e-5)
    magnitude = -np.sort(-np.abs(reference), axis=1)
    gaps = np.diff(magnitude[:, : k + 1], axis=1).min(axis=1)
    clear = -gaps > 1e-5
    np.testing.assert_array_equal(index[clear], order[clear])
    assert clear.mean() > 0.9


@pytest.mark.parametrize("depth", [1, 2, 3, 6])
def test_contributions_and_margin_match_xgboost(depth: int) -> None:
    booster = _booster(depth)
    x = _queries()
    tables = SaabasTables(booster)
    ours = tables.contributions(x)
    np.testing.assert_allclose(ours, _xgb_contributions(booster, x), rtol=0, atol=1e-5)
    margin = booster.inplace_predict(x, predict_type="margin")
    np.testing.assert_allclose(ours.sum(axis=1), margin, rtol=0, atol=1e-5)


def test_values_are_compared_as_float32_like_xgboost() -> None:
    """float64 values a hair off a float32 threshold round onto it: XGBoost compares the
    rounded value, so they go right, though below the threshold in float64."""
    booster = _booster(3)
    frame = booster.trees_to_dataframe()
    splits = frame[frame["Feature"] != "Leaf"].head(40)
    x = np.full((2 * len(splits), N_FEATURES), 0.5)
    for i, (name, cut) in enumerate(zip(splits["Feature"], splits["Split"], strict=True)):
        column = int(name.removeprefix("f"))
        threshold = float(np.float32(cut))
        x[2 * i, column] = np.nextafter(threshold, -np.inf)
        x[2 * i + 1, column] = np.nextafter(threshold, np.inf)
    ours = SaabasTables(booster).contributions(x)
    np.testing.assert_allclose(ours, _xgb_contributions(booster, x), atol=1e-5)
    margin = booster.inplace_predict(x, predict_type="margin")
    np.testing.assert_allclose(ours.sum(axis=1), margin, atol=1e-5)


def test_test_models_split_missing_values_both_ways() -> None:
    frame = _booster(6).trees_to_dataframe()
    splits = frame[frame["Feature"] != "Leaf"]
    assert (splits["Missing"] == splits["Yes"]).any() and (splits["Missing"] == splits["No"]).any()


@pytest.mark.parametrize("depth", [2, 4])
def test_probability_and_reasons_match_the_xgboost_path(depth: int) -> None:
    booster = _booster(depth, rounds=60, base_score=0.3)
    x = _queries()
    predictor = _predictor(booster)
    trees = booster.inplace_predict(x).astype(np.float64)
    expected = 0.5 * trees + 0.5 * predictor.linear.predict_proba(x)  # type: ignore[union-attr]
    np.testing.assert_allclose(predictor.raw_probability(x), expected, rtol=0, atol=1e-6)

    explanation = predictor.explain(x, 3)
    assert explanation.feature_index.shape == (len(x), 3)
    _assert_same_top_k(
        explanation.feature_index, explanation.contribution, _xgb_contributions(booster, x)[:, :-1]
    )


def test_infinite_values_are_scored_and_explained() -> None:
    """A DMatrix refuses inf (and float64 beyond float32); the tables take them as XGBoost's
    `inplace_predict` does, so such rows get a probability and reasons too."""
    booster = _booster(3)
    x = _queries(20)
    x[0, :] = np.inf
    x[1, :] = -np.inf
    x[2, :] = 1e39
    margin = booster.inplace_predict(x, predict_type="margin")
    contributions = SaabasTables(booster).contributions(x)
    np.testing.assert_allclose(contributions.sum(axis=1), margin, atol=1e-5)
    predictor = _predictor(booster, linear_weight=0.0)
    np.testing.assert_allclose(predictor.raw_probability(x), booster.inplace_predict(x), atol=1e-6)
    explanation = predictor.explain(x, 3)
    order = np.argsort(-np.abs(contributions[:, :-1]), axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(explanation.feature_index, order)


def test_one_row_and_no_rows() -> None:
    booster = _booster(3)
    predictor = _predictor(booster, linear_weight=0.0)
    x = _queries()
    for rows in (x[:1], x[-5:-4], x[:0]):
        expected = booster.inplace_predict(rows) if len(rows) else np.empty(0)
        np.testing.assert_allclose(predictor.raw_probability(rows), expected, atol=1e-6)
        explanation = predictor.explain(rows, 3)
        reference = _xgb_contributions(booster, rows)[:, :-1] if len(rows) else np.empty((0, 12))
        order = np.argsort(-np.abs(reference), axis=1, kind="stable")[:, :3]
        np.testing.assert_array_equal(explanation.feature_index, order)


def test_a_model_without_splits_is_all_bias() -> None:
    booster = _booster(3, rounds=5, min_child_weight=1e9)
    x = _queries(20)
    ours = SaabasTables(booster).contributions(x)
    np.testing.assert_allclose(ours, _xgb_contributions(booster, x), atol=1e-5)
    assert not ours[:, :-1].any()


def test_unsupported_models_fall_back_to_xgboost() -> None:
    x, y = _data(300, seed=5)
    dart = xgb.train(
        {"booster": "dart", "objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(x, y),
        num_boost_round=10,
    )
    regression = xgb.train(
        {"objective": "reg:squarederror", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(x, y),
        num_boost_round=10,
    )
    for booster in (dart, regression):
        with pytest.raises(ValueError):
            SaabasTables(booster)
        predictor = _predictor(booster, linear_weight=0.0)
        np.testing.assert_allclose(predictor.raw_probability(x), booster.inplace_predict(x))
        contributions = _xgb_contributions(booster, x)[:, :-1]
        order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :3]
        np.testing.assert_array_equal(predictor.explain(x, 3).feature_index, order)


def test_models_too_big_for_tables_fall_back_to_xgboost(monkeypatch: pytest.MonkeyPatch) -> None:
    booster = _booster(4)
    x = _queries(50)
    monkeypatch.setattr(saabas, "MAX_BUILD_WORK", 10)
    with pytest.raises(ValueError):
        SaabasTables(booster)
    predictor = _predictor(booster, linear_weight=0.0)
    np.testing.assert_allclose(predictor.raw_probability(x), booster.inplace_predict(x))
    assert predictor.tables_ == (booster, None)
    explanation = predictor.explain(x, 3)
    reference = _xgb_contributions(booster, x)[:, :-1]
    order = np.argsort(-np.abs(reference), axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(explanation.feature_index, order)
    np.testing.assert_array_equal(explanation.contribution, np.take_along_axis(reference, order, 1))


def test_wrong_width_is_refused() -> None:
    predictor = _predictor(_booster(2))
    with pytest.raises(ValueError):
        predictor.explain(np.zeros((2, N_FEATURES + 1)), 3)


def test_one_pass_gives_the_same_probability_and_reasons_as_two() -> None:
    predictor = _predictor(_booster(3))
    x = _queries(50)
    probability, explanation = predictor.probability_and_reasons(x, 3)
    np.testing.assert_array_equal(probability, predictor.calibration(predictor.raw_probability(x)))
    separate = predictor.explain(x, 3)
    np.testing.assert_array_equal(explanation.feature_index, separate.feature_index)
    np.testing.assert_array_equal(explanation.contribution, separate.contribution)


def test_a_new_booster_gets_new_tables() -> None:
    predictor = _predictor(_booster(2))
    x = _queries(50)
    predictor.explain(x, 3)
    predictor.booster = _booster(3)
    np.testing.assert_allclose(
        predictor.explain(x, 3).contribution,
        _predictor(predictor.booster).explain(x, 3).contribution,
    )


def test_pickling_leaves_the_caches_behind() -> None:
    predictor = _predictor(_booster(2))
    x = _queries(20)
    before = predictor.explain(x, 3)
    assert hasattr(predictor, "tables_")
    restored = pickle.loads(pickle.dumps(predictor))
    assert not hasattr(restored, "tables_")
    np.testing.assert_array_equal(restored.explain(x, 3).feature_index, before.feature_index)


@pytest.mark.parametrize("k", [0, 1, 3, 8, 9, 12])
def test_top_k_is_a_stable_argsort_prefix(k: int) -> None:
    rng = np.random.default_rng(k)
    values = rng.choice([-2.0, -1.0, -0.0, 0.0, 1.0, 2.0, 0.5], size=(300, 12)).astype(np.float32)
    expected = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(top_k_by_magnitude(values, k), expected)
