"""Champion and challenger in one worker (issue 16): the sticky split, the answers of each
arm with the other model's score beside them, and the fallback when a model fails."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from pydantic import TypeAdapter

from core.pipeline.predictor import ChurnPredictor
from core.schema import CustomerData, Prediction
from core.settings import Settings
from launchers.server_process import request_bodies
from serving.scoring import SHADOW_KEY, LoadedModel, score_batch
from serving.served_models import ErrorWindow, ServedModels, challenger_arm, score_served
from training.train import TrainingOutcome

SETTINGS = Settings()


def hash_id(customer_id: str) -> str:
    return f"h-{customer_id}"


@pytest.fixture(scope="module")
def champion(trained: TrainingOutcome) -> LoadedModel:
    return LoadedModel(trained.predictor, "champion-v", "c" * 64)


@pytest.fixture(scope="module")
def challenger(trained: TrainingOutcome) -> LoadedModel:
    """Another model: the same trees with a steeper calibration (other probabilities)."""
    predictor = trained.predictor
    calibration = type(predictor.calibration)(
        slope=predictor.calibration.slope * 1.5, intercept=predictor.calibration.intercept + 0.3
    )
    other = ChurnPredictor(
        cleaner=predictor.cleaner,
        features=predictor.features,
        booster=predictor.booster,
        calibration=calibration,
        threshold=predictor.threshold,
        extras=predictor.extras,
        linear=predictor.linear,
        linear_weight=predictor.linear_weight,
    )
    return LoadedModel(other, "challenger-v", "d" * 64)


@pytest.fixture(scope="module")
def broken(trained: TrainingOutcome) -> LoadedModel:
    """A model whose booster takes 3 features: scoring 25 raises inside XGBoost."""
    data = xgb.DMatrix(np.random.default_rng(0).normal(size=(50, 3)), label=np.arange(50) % 2)
    booster = xgb.train({"objective": "binary:logistic"}, data, num_boost_round=2)
    predictor = trained.predictor
    bad = ChurnPredictor(
        cleaner=predictor.cleaner,
        features=predictor.features,
        booster=booster,
        calibration=predictor.calibration,
        threshold=predictor.threshold,
        extras=predictor.extras,
    )
    return LoadedModel(bad, "broken-v", "e" * 64)


@pytest.fixture(scope="module")
def customers(trained: TrainingOutcome) -> list[CustomerData]:
    bodies = request_bodies(trained.test_frame.iloc[:300])
    return [CustomerData.model_validate(body) for body in bodies]


def test_the_split_is_sticky_and_holds_its_share() -> None:
    hashes = [f"{i:064x}" for i in range(5000)]
    arm = challenger_arm(hashes, 0.1, "challenger-v")
    assert abs(arm.mean() - 0.1) <= 0.02
    # the same customer gets the same arm whatever else is in the batch, in any order
    again = challenger_arm(hashes[::-1], 0.1, "challenger-v")[::-1]
    assert np.array_equal(arm, again)
    one_by_one = [challenger_arm([h], 0.1, "challenger-v")[0] for h in hashes[:500]]
    assert one_by_one == arm[:500].tolist()
    # a new challenger draws a new sample: overlap near share², not share
    other = challenger_arm(hashes, 0.1, "next-challenger")
    assert np.count_nonzero(arm & other) < 0.5 * np.count_nonzero(arm)
    assert not challenger_arm(hashes, 0.0, "x").any()
    assert challenger_arm(hashes, 1.0, "x").all()


def test_each_arm_answers_its_customers_with_the_other_score_as_shadow(
    champion: LoadedModel, challenger: LoadedModel, customers: list[CustomerData]
) -> None:
    served = ServedModels(champion, challenger, share=0.3)
    scored = score_served(served, customers, SETTINGS, hash_id, ErrorWindow(100))
    by_champion = score_batch(champion, customers, SETTINGS).probability
    by_challenger = score_batch(challenger, customers, SETTINGS).probability
    arm = challenger_arm([hash_id(c.customer_id) for c in customers], 0.3, "challenger-v")
    assert 0.2 < arm.mean() < 0.4
    rows = scored.rows(with_shadow=True)
    for i, row in enumerate(rows):
        mine, other = (by_challenger, by_champion) if arm[i] else (by_champion, by_challenger)
        assert row["model_arm"] == ("challenger" if arm[i] else "champion")
        assert row["model_version"] == ("challenger-v" if arm[i] else "champion-v")
        assert row["churn_probability"] == pytest.approx(mine[i], abs=1e-12)
        version, probability = row.pop(SHADOW_KEY)
        assert version == ("champion-v" if arm[i] else "challenger-v")
        assert probability == pytest.approx(other[i], abs=1e-12)
    TypeAdapter(list[Prediction]).validate_python(rows)
    assert not any(SHADOW_KEY in row for row in scored.rows())


def test_without_a_challenger_every_answer_is_the_champions(
    champion: LoadedModel, customers: list[CustomerData]
) -> None:
    scored = score_served(ServedModels(champion), customers, SETTINGS, hash_id, ErrorWindow(10))
    rows = scored.rows(with_shadow=True)
    assert {(r["model_arm"], r["model_version"]) for r in rows} == {("champion", "champion-v")}
    assert not any(SHADOW_KEY in r for r in rows)
    assert scored.shadows() == [None] * len(customers)


def test_a_failing_champion_is_answered_by_the_fallback_and_counted(
    champion: LoadedModel, broken: LoadedModel, customers: list[CustomerData]
) -> None:
    errors = ErrorWindow(100)
    served = ServedModels(broken, fallback=champion)
    scored = score_served(served, customers[:40], SETTINGS, hash_id, errors)
    assert {r["model_version"] for r in scored.rows()} == {"champion-v"}
    assert errors.rate("broken-v") == (1.0, 40)
    with pytest.raises(Exception, match=r"(?i)feature"):
        score_served(ServedModels(broken), customers[:5], SETTINGS, hash_id, errors)


def test_a_failing_challenger_leaves_every_customer_to_the_champion(
    champion: LoadedModel, broken: LoadedModel, customers: list[CustomerData]
) -> None:
    errors = ErrorWindow(100)
    served = ServedModels(champion, broken, share=0.5)
    scored = score_served(served, customers[:60], SETTINGS, hash_id, errors)
    assert {r["model_arm"] for r in scored.rows()} == {"champion"}
    assert errors.rate("broken-v") == (1.0, 60)
    assert errors.rate("champion-v") == (0.0, 60)


def test_the_error_window_judges_only_the_latest_answers() -> None:
    errors = ErrorWindow(100)
    errors.record("v", 90, failed=False)
    errors.record("v", 20, failed=True)
    assert errors.rate("v") == (0.2, 100)
    errors.record("v", 500, failed=False)
    assert errors.rate("v") == (0.0, 100)
    errors.forget("v")
    assert errors.rate("v") == (0.0, 0)


def test_the_cache_scope_covers_the_whole_experiment(
    champion: LoadedModel, challenger: LoadedModel
) -> None:
    alone = ServedModels(champion).cache_scope
    assert alone == champion.cache_scope
    with_challenger = ServedModels(champion, challenger, 0.1).cache_scope
    assert with_challenger != alone
    assert ServedModels(champion, challenger, 0.2).cache_scope != with_challenger
