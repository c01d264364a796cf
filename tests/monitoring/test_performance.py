"""`run_performance` on SQLite and a real PostgreSQL: scikit-learn's figures on the joined
rows, the minimum label count, label coverage, the degradation rules and their retraining
trigger, the rows in `performance_results`."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import Engine, select

from monitoring.database import PERFORMANCE_RESULTS
from monitoring.degradation import find_degradations
from monitoring.performance import (
    RESULT_METRICS,
    PerformanceOptions,
    run_performance,
)
from monitoring.triggers import pending_triggers
from tests.monitoring.served import NOW, Served, days_ago, label, serve
from tests.monitoring.sklearn_figures import sklearn_figures

OPTIONS = PerformanceOptions(
    window=timedelta(days=30),
    horizon_days=90,
    min_labels=100,
    max_drop=0.03,
    drop_metrics=("accuracy", "roc_auc"),
)
THRESHOLD = 0.35


def no_training(version: str) -> None:
    return None


def traffic(
    engine: Engine, n: int, seed: int, version: str = "v1", flip: float = 0.0
) -> dict[str, np.ndarray]:
    """n customers served 5 days ago with calibrated p (labels drawn from p, then a
    `flip` share of them inverted), each after an older decoy prediction the label must
    not judge; labelled yesterday. Returns the rows the labels judge."""
    rng = np.random.default_rng(seed)
    p = rng.beta(1.0, 2.5, n)
    decision = p >= THRESHOLD
    y = rng.random(n) < p
    flipped = rng.random(n) < flip
    y = np.where(flipped, ~y, y)
    ids = [f"{version}-{seed}-{i}" for i in range(n)]
    decoys = [
        Served(c, 1 - p[i], not decision[i], days_ago(12), version) for i, c in enumerate(ids)
    ]
    judged = [Served(c, p[i], decision[i], days_ago(5), version) for i, c in enumerate(ids)]
    serve(engine, decoys + judged)
    label(engine, [(c, y[i], days_ago(1).date()) for i, c in enumerate(ids)])
    return {"y": y.astype(int), "p": p, "d": decision.astype(int)}


def stored_rows(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(select(PERFORMANCE_RESULTS))]


def test_figures_equal_scikit_learns_on_the_joined_rows(engine: Engine) -> None:
    expected = {"v1": traffic(engine, 600, seed=1), "v2": traffic(engine, 400, 2, "v2")}
    run = run_performance(engine, OPTIONS, now=NOW, training_metrics=no_training)
    assert [v.model_version for v in run.versions] == ["v1", "v2"]
    for version in run.versions:
        rows = expected[version.model_version]
        figures = sklearn_figures(rows)
        assert version.measured == pytest.approx(figures, abs=1e-12)
        assert version.label_count == version.prediction_count == len(rows["y"])
        assert version.label_coverage == 1.0
    stored = stored_rows(engine)
    assert len(stored) == 2 * len(RESULT_METRICS)
    by_key = {(r["model_version"], r["metric"]): r for r in stored}
    assert by_key["v2", "roc_auc"]["measured"] == pytest.approx(
        sklearn_figures(expected["v2"])["roc_auc"]
    )
    assert by_key["v2", "roc_auc"]["estimated"] == run.versions[1].estimated["roc_auc"]
    assert by_key["v1", "ece"]["estimated"] is None
    assert by_key["v1", "label_coverage"]["measured"] == 1.0
    assert {r["run_id"] for r in stored} == {run.run_id}
    assert {r["label_count"] for r in stored if r["model_version"] == "v1"} == {600}
    assert pending_triggers(engine) == []


def test_below_the_minimum_label_count_no_figure_is_claimed(engine: Engine) -> None:
    traffic(engine, 150, seed=3)
    high = {"accuracy": 0.99, "roc_auc": 0.99}
    options = replace(OPTIONS, min_labels=151)
    (version,) = run_performance(engine, options, now=NOW, training_metrics=lambda v: high).versions
    assert version.label_count == 150
    assert set(version.measured.values()) == set(version.measured_error.values()) == {None}
    assert version.estimated["accuracy"] is not None  # the estimate needs no label
    assert version.degradations == [] and pending_triggers(engine) == []
    with_enough = replace(OPTIONS, min_labels=150)
    (version,) = run_performance(
        engine, with_enough, now=NOW, training_metrics=lambda v: high
    ).versions
    assert version.measured["accuracy"] is not None
    assert {d.metric for d in version.degradations} == {"accuracy", "roc_auc"}


def test_label_coverage_is_the_labelled_share_of_predicted_customers(engine: Engine) -> None:
    traffic(engine, 300, seed=4)
    serve(engine, [Served(f"unlabelled-{i}", 0.2, False, days_ago(3)) for i in range(100)])
    serve(engine, [Served("unlabelled-0", 0.3, False, days_ago(2))])  # a repeat weighs once
    (version,) = run_performance(engine, OPTIONS, now=NOW, training_metrics=no_training).versions
    assert version.prediction_count == 400
    assert version.label_coverage == pytest.approx(300 / 400)


def test_flipped_labels_record_a_degradation_and_a_retraining_trigger(engine: Engine) -> None:
    honest = sklearn_figures(traffic(engine, 2000, seed=5))
    training = {**honest, "threshold": THRESHOLD}  # trained as well as it serves
    run = run_performance(engine, OPTIONS, now=NOW, training_metrics=lambda v: training)
    assert run.versions[0].degradations == [] and pending_triggers(engine) == []

    traffic(engine, 2000, seed=6, version="v2", flip=0.15)
    later = NOW + timedelta(minutes=1)
    run = run_performance(engine, OPTIONS, now=later, training_metrics=lambda v: training)
    v1, v2 = run.versions
    assert v1.degradations == []
    assert {(d.metric, d.rule) for d in v2.degradations} == {
        ("accuracy", "drop"),
        ("roc_auc", "drop"),
    }
    drop = next(d for d in v2.degradations if d.metric == "accuracy")
    assert drop.training == honest["accuracy"]
    assert drop.measured < honest["accuracy"] - OPTIONS.max_drop
    (trigger,) = pending_triggers(engine)
    assert (trigger.reason, trigger.model_version, trigger.features) == ("performance", "v2", [])
    assert trigger.id == v2.trigger_id
    assert trigger.figures["label_count"] == 2000
    assert trigger.figures["degradations"][0]["metric"] == "accuracy"
    assert trigger.figures["measured"]["accuracy"] == pytest.approx(v2.measured["accuracy"])


def test_only_the_chosen_model_version_is_evaluated(engine: Engine) -> None:
    traffic(engine, 200, seed=7)
    traffic(engine, 200, seed=8, version="v2")
    run = run_performance(
        engine, OPTIONS, model_version="v2", now=NOW, training_metrics=no_training
    )
    assert [v.model_version for v in run.versions] == ["v2"]
    assert {r["model_version"] for r in stored_rows(engine)} == {"v2"}


def test_a_window_without_predictions_records_nothing(engine: Engine) -> None:
    serve(engine, [Served("old", 0.5, True, days_ago(40))])
    assert run_performance(engine, OPTIONS, now=NOW, training_metrics=no_training).versions == []
    assert stored_rows(engine) == []


# The rules themselves (no database).


def degradations(measured: dict[str, float], training: dict[str, float] | None, **rule: object):
    options = {"max_drop": 0.03, "drop_metrics": ("accuracy", "roc_auc", "brier"), "bars": {}}
    options.update(rule)
    return [(d.metric, d.rule) for d in find_degradations(measured, training, **options)]  # type: ignore[arg-type]


def test_the_designs_drop_from_89_to_85_percent_accuracy_is_a_degradation() -> None:
    assert degradations({"accuracy": 0.85}, {"accuracy": 0.89}) == [("accuracy", "drop")]
    assert degradations({"accuracy": 0.86}, {"accuracy": 0.89}) == []  # exactly the margin
    assert degradations({"accuracy": 0.95}, {"accuracy": 0.89}) == []


def test_error_metrics_degrade_upwards_and_their_bars_are_ceilings() -> None:
    assert degradations({"brier": 0.15}, {"brier": 0.11}) == [("brier", "drop")]
    assert degradations({"brier": 0.08}, {"brier": 0.11}) == []
    assert degradations({"ece": 0.06}, None, bars={"ece": 0.05}) == [("ece", "bar")]
    assert degradations({"ece": 0.04}, None, bars={"ece": 0.05}) == []


def test_a_bar_applies_without_training_figures_and_unwatched_metrics_do_not_drop() -> None:
    assert degradations({"accuracy": 0.80}, None, bars={"accuracy": 0.85}) == [("accuracy", "bar")]
    assert degradations({"precision": 0.50}, {"precision": 0.90}) == []  # not watched
    assert degradations({"accuracy": None}, {"accuracy": 0.9}, bars={"accuracy": 0.85}) == []  # type: ignore[dict-item]


def test_settings_naming_an_unknown_metric_are_refused() -> None:
    with pytest.raises(ValueError, match="performance_bars"):
        replace(OPTIONS, bars={"acuracy": 0.8})
    with pytest.raises(ValueError, match="performance_drop_metrics"):
        replace(OPTIONS, drop_metrics=("auc",))
