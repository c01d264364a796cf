"""The linear half of the blend, Platt calibration, and extra-column encoding and checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from core.pipeline.extras import (
    ExtraColumn,
    encode_extra_frame,
    encode_extra_values,
    extra_problems,
    learn_categories,
)
from core.pipeline.linear import LinearModel, PlattCalibration, fit_linear, logit, sigmoid

REGION = ExtraColumn("region", "category", ("north", "south"))
NPS = ExtraColumn("nps", "number")


def test_linear_model_matches_sklearn_on_standardised_data() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, (500, 3))
    y = (x[:, 0] + rng.normal(0, 1, 500) > 3).astype(int)
    model = fit_linear(x, y)
    standardised = (x - x.mean(axis=0)) / x.std(axis=0)
    reference = LogisticRegression(max_iter=2000).fit(standardised, y)
    np.testing.assert_allclose(
        model.predict_proba(x), reference.predict_proba(standardised)[:, 1], atol=1e-6
    )


def test_missing_features_sit_at_the_mean_and_constant_columns_are_safe() -> None:
    x = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, np.nan], [2.0, 5.0, np.nan], [4.0, 5.0, np.nan]])
    model = fit_linear(x, np.array([0, 1, 0, 1]))
    assert np.all(model.scale > 0)
    row = np.array([[np.nan, 5.0, np.nan]])
    at_mean = np.array([[2.5, 5.0, 7.0]])
    assert model.predict_proba(row)[0] == pytest.approx(
        float(sigmoid(np.array([model.intercept + model.coef[2] * 0]))[0])
    )
    assert np.isfinite(model.predict_proba(at_mean)).all()
    restored = LinearModel.from_dict(model.to_dict())
    np.testing.assert_array_equal(restored.predict_proba(x), model.predict_proba(x))


def test_platt_calibration_recovers_a_known_distortion() -> None:
    rng = np.random.default_rng(1)
    true = rng.uniform(0.02, 0.98, 20_000)
    y = (rng.uniform(size=true.size) < true).astype(int)
    distorted = sigmoid(0.5 * logit(true) - 1.0)  # too flat and too low
    calibration = PlattCalibration.fit(distorted, y)
    assert calibration.slope == pytest.approx(2.0, rel=0.1)
    assert calibration.intercept == pytest.approx(2.0, rel=0.15)
    assert np.abs(calibration(distorted) - true).mean() < 0.02
    assert PlattCalibration.identity()(np.array([0.3]))[0] == pytest.approx(0.3)


def test_extra_columns_encode_the_same_from_a_table_and_from_requests() -> None:
    frame = pd.DataFrame({"region": ["south", None, "north", "west"], "nps": [3.0, 7.5, None, 1]})
    from_table = encode_extra_frame(frame, [REGION, NPS])
    from_requests = encode_extra_values(
        [
            {"region": "south", "nps": 3.0},
            {"nps": 7.5},
            {"region": "north"},
            {"region": "west", "nps": 1},
        ],
        [REGION, NPS],
    )
    expected = np.array([[1, 3.0], [np.nan, 7.5], [0, np.nan], [np.nan, 1.0]])
    np.testing.assert_array_equal(from_table, expected)
    np.testing.assert_array_equal(from_requests, expected)


def test_categories_are_learned_from_the_training_table() -> None:
    frame = pd.DataFrame({"region": ["b", "a", None, "b"], "nps": [1, 2, 3, 4]})
    learned = learn_categories([ExtraColumn("region", "category"), NPS], frame)
    assert learned[0].categories == ("a", "b") and learned[1] == NPS
    assert ExtraColumn.from_dict(learned[0].to_dict()) == learned[0]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"region": "north", "nps": 4.0}, []),
        (None, [("extra.region", "missing"), ("extra.nps", "missing")]),
        ({"region": "east", "nps": 4.0}, [("extra.region", "literal_error")]),
        ({"region": "north", "nps": "4"}, [("extra.nps", "finite_number")]),
        ({"region": "north", "nps": float("nan")}, [("extra.nps", "finite_number")]),
        ({"region": "north", "nps": 1, "x": 1}, [("extra.x", "extra_forbidden")]),
    ],
)
def test_extra_problems_name_field_and_rule(
    extra: dict[str, object] | None, expected: list[tuple[str, str]]
) -> None:
    problems = extra_problems(extra, [REGION, NPS])
    assert [(p["field"], p["rule"]) for p in problems] == expected


def test_optional_extras_may_be_missing() -> None:
    optional = ExtraColumn("nps", "number", required=False)
    assert extra_problems({}, [optional]) == []
    assert extra_problems({"nps": 1}, []) == [
        {"field": "extra.nps", "rule": "extra_forbidden", "message": "not a model input"}
    ]
