"""`churn guard`: a champion whose live figures (stored by a real `churn performance` run on
a logged SQLite log) break a bar is rolled back in a real MLflow SQLite registry, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bentoml._internal.models import ModelStore
from sqlalchemy import Engine
from typer.testing import CliRunner

from cli import app
from core.registry import ModelRegistry
from core.settings import get_settings
from lifecycle.guard import guard
from monitoring.performance import PerformanceOptions, run_performance
from tests.lifecycle.experiment_log import (
    BAD_NOISE,
    GOOD_NOISE,
    Versions,
    cohort,
    log_cohort,
    register_pair,
)
from training.train import TrainingOutcome

BARS = {"roc_auc": 0.8}
"""Good scores reach ≈ 0.83, bad ones ≈ 0.75."""
OPTIONS = PerformanceOptions(
    window=timedelta(days=30),
    horizon_days=90,
    min_labels=500,
    max_drop=0.03,
    drop_metrics=(),
)


@pytest.fixture
def promoted(registry: ModelRegistry, trained: TrainingOutcome, tmp_path: Path) -> Versions:
    """The copy promoted over the session model: the session model is previous_champion."""
    versions = register_pair(registry, trained, ModelStore(tmp_path / "source"))
    registry.set_champion(versions.challenger, "test", "promoted")
    return versions


def serve_champion(
    engine: Engine, versions: Versions, noise: float, seed: int, rows: int = 2000
) -> None:
    """Customers answered (both arms) by the promoted version, labelled 5 days later."""
    group = cohort(rows, seed, noise, noise)
    only_champion = Versions(
        versions.challenger,
        versions.champion,
        versions.challenger_bento,
        versions.challenger_bento,
    )
    served_at = datetime.now(UTC) - timedelta(days=20)
    log_cohort(engine, only_champion, group, served_at, churn_after_days=5, stay_label_after_days=5)


def measure(engine: Engine, at: datetime | None = None) -> None:
    run_performance(engine, OPTIONS, now=at or datetime.now(UTC), training_metrics=lambda _: None)


def test_a_breached_bar_rolls_back_once_with_the_figures(
    engine: Engine, registry: ModelRegistry, promoted: Versions
) -> None:
    serve_champion(engine, promoted, BAD_NOISE, seed=11)
    measure(engine)
    outcome = guard(engine, registry, datetime.now(UTC), "guard-job", bars=BARS)
    assert outcome.rolled_back, outcome.message
    assert outcome.champion == promoted.challenger
    assert [b.metric for b in outcome.breaches] == ["roc_auc"]
    assert outcome.measured["roc_auc"] is not None and outcome.measured["roc_auc"] < 0.8
    after = registry.assignment()
    assert (after.champion, after.previous_champion) == (promoted.champion, None)
    entry = registry.audit_trail()[0]
    assert (entry.action, entry.version, entry.replaced, entry.actor) == (
        "rollback",
        promoted.champion,
        promoted.challenger,
        "guard-job",
    )
    assert "roc_auc" in entry.reason and "past its bar 0.8" in entry.reason
    assert entry.figures["breaches"][0]["measured"] == outcome.measured["roc_auc"]
    assert entry.figures["label_count"] == 2000 and entry.figures["bars"] == BARS
    # The same measurement again: the champion has changed, nothing more happens.
    again = guard(engine, registry, datetime.now(UTC), "guard-job", bars=BARS)
    assert not again.rolled_back and "nothing to do" in again.message
    assert [e.action for e in registry.audit_trail()].count("rollback") == 1


def test_only_a_measurement_since_the_promotion_counts(
    engine: Engine, registry: ModelRegistry, trained: TrainingOutcome, tmp_path: Path
) -> None:
    versions = register_pair(registry, trained, ModelStore(tmp_path / "source"))
    serve_champion(engine, versions, BAD_NOISE, seed=12)
    measure(engine, datetime.now(UTC) - timedelta(hours=1))  # while it was the challenger
    registry.set_champion(versions.challenger, "test", "promoted")
    before = guard(engine, registry, datetime.now(UTC), "guard-job", bars=BARS)
    assert not before.rolled_back and "no performance run" in before.message
    assert registry.assignment().champion == versions.challenger
    measure(engine)
    after = guard(engine, registry, datetime.now(UTC), "guard-job", bars=BARS)
    assert after.rolled_back and registry.assignment().champion == versions.champion


def test_within_its_bars_the_champion_stays(
    engine: Engine, registry: ModelRegistry, promoted: Versions
) -> None:
    serve_champion(engine, promoted, GOOD_NOISE, seed=13)
    measure(engine)
    outcome = guard(engine, registry, datetime.now(UTC), "guard-job", bars=BARS)
    assert not outcome.rolled_back and "within its bars (roc_auc)" in outcome.message
    assert outcome.measured["roc_auc"] is not None and outcome.measured["roc_auc"] > 0.8
    assert registry.assignment().champion == promoted.challenger
    assert registry.audit_trail()[0].action == "set_champion"


def test_a_figure_not_claimed_breaks_no_bar(
    engine: Engine, registry: ModelRegistry, promoted: Versions
) -> None:
    serve_champion(engine, promoted, BAD_NOISE, seed=16, rows=300)  # below 500 labels
    measure(engine)
    outcome = guard(engine, registry, datetime.now(UTC), "guard-job", bars=BARS)
    assert not outcome.rolled_back and "no barred figure claimed" in outcome.message
    assert outcome.label_count == 300 and outcome.measured["roc_auc"] is None
    assert registry.assignment().champion == promoted.challenger


def test_nothing_to_do_without_bars_or_a_fallback(
    engine: Engine, registry: ModelRegistry, promoted: Versions
) -> None:
    serve_champion(engine, promoted, BAD_NOISE, seed=14)
    measure(engine)
    unbarred = guard(engine, registry, datetime.now(UTC), "guard-job", bars={})
    assert not unbarred.rolled_back and "no bar configured" in unbarred.message
    with pytest.raises(ValueError, match="CHURN_PERFORMANCE_BARS: unknown metric"):
        guard(engine, registry, datetime.now(UTC), "guard-job", bars={"acuracy": 0.8})
    registry.rollback("ops", "by hand")  # now nothing to fall back to
    registry.set_champion(promoted.challenger, "ops", "again")  # previous: the session model
    registry.rollback("ops", "by hand again")
    alone = guard(engine, registry, datetime.now(UTC), "guard-job", bars=BARS)
    assert not alone.rolled_back and "no previous champion" in alone.message


runner = CliRunner()


def test_churn_guard_and_churn_rollback(
    engine: Engine,
    registry: ModelRegistry,
    promoted: Versions,
    cli_env: pytest.MonkeyPatch,
) -> None:
    cli_env.setenv("CHURN_PERFORMANCE_BARS", '{"roc_auc": 0.8}')
    get_settings.cache_clear()
    serve_champion(engine, promoted, GOOD_NOISE, seed=15)
    measure(engine)
    kept = runner.invoke(app, ["guard"])
    assert kept.exit_code == 0, kept.output
    assert f"checked champion {promoted.challenger}" in kept.output
    assert "2,000 labels" in kept.output and "within its bars" in kept.output
    rolled = runner.invoke(app, ["rollback", "--reason", "error rate 12 %"])
    assert rolled.exit_code == 0, rolled.output
    assert f"champion is version {promoted.champion}" in rolled.output
    entry = registry.audit_trail()[0]
    assert (entry.action, entry.reason) == ("rollback", "error rate 12 %")
    assert entry.actor.startswith("cli:")
    refused = runner.invoke(app, ["rollback", "--reason", "again"])
    assert refused.exit_code == 1 and "no previous champion" in refused.output
    nothing = runner.invoke(app, ["guard"])
    assert nothing.exit_code == 0 and "nothing to do" in nothing.output
