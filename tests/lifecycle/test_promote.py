"""`churn promote`: the paired test on the experiment's logged scores, acted on in a real MLflow
SQLite registry; the prediction log a real SQLite database migrated by the product's code."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from bentoml._internal.models import ModelStore
from sqlalchemy import Engine
from typer.testing import CliRunner

from cli import app
from core.registry import ModelRegistry
from lifecycle.experiment import paired_outcomes
from lifecycle.promote import DEFERRED_ACTION, decision_threshold, promote
from tests.churn_process import run_churn
from tests.lifecycle.experiment_log import (
    BAD_NOISE,
    GOOD_NOISE,
    Versions,
    cohort,
    log_cohort,
    register_pair,
)
from training.train import TrainingOutcome

NOW = datetime.now(UTC)
CLOSED = NOW - timedelta(days=100)
"""Served more than the 90-day horizon ago: every outcome is known."""


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    """Where promote fetches the versions (not the session's store: its `:latest` stays
    the trained model for every other test)."""
    (tmp_path / "fetched").mkdir()
    return ModelStore(tmp_path / "fetched")


@pytest.fixture
def versions(registry: ModelRegistry, trained: TrainingOutcome, tmp_path: Path) -> Versions:
    return register_pair(registry, trained, ModelStore(tmp_path / "source"))


def test_paired_outcomes_pair_the_arms_and_count_only_closed_horizons(
    engine: Engine, versions: Versions
) -> None:
    closed = cohort(400, seed=1, champion_noise=GOOD_NOISE, challenger_noise=BAD_NOISE)
    recent = cohort(400, seed=2, champion_noise=GOOD_NOISE, challenger_noise=BAD_NOISE)
    log_cohort(engine, versions, closed, CLOSED)
    # Served 30 days ago: churners already seen count, "still here" labels do not yet.
    log_cohort(engine, versions, recent, NOW - timedelta(days=30), stay_label_after_days=20)
    outcomes = paired_outcomes(
        engine, versions.champion_bento, versions.challenger_bento, NOW, horizon_days=90
    )
    recent_churners = int(recent.churned.sum())
    assert outcomes.counts["paired"] == 800
    assert outcomes.counts["labelled"] == 800
    assert outcomes.counts["open"] == 400 - recent_churners
    assert outcomes.counts["counted"] == 400 + recent_churners
    assert outcomes.counts["churners"] == int(closed.churned.sum()) + recent_churners
    # Each customer's champion and challenger score, whichever arm answered.
    known = np.concatenate([np.ones(400, bool), recent.churned])  # closed, or churned
    y = np.concatenate([closed.churned, recent.churned])[known]
    p0 = np.concatenate([closed.p_champion, recent.p_champion])[known]
    p1 = np.concatenate([closed.p_challenger, recent.p_challenger])[known]
    expected = sorted(zip(y.astype(int).tolist(), p0.tolist(), p1.tolist(), strict=True))
    got = sorted(
        zip(
            outcomes.y.tolist(),
            outcomes.p_champion.tolist(),
            outcomes.p_challenger.tolist(),
            strict=True,
        )
    )
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-12)
    # Once the horizon has passed, the stayers of the recent cohort count too.
    later = paired_outcomes(
        engine, versions.champion_bento, versions.challenger_bento, NOW + timedelta(days=61), 90
    )
    assert later.counts["open"] == 0 and later.counts["counted"] == 800
    # Another pair's rows are not this experiment's.
    other = paired_outcomes(engine, versions.champion_bento, "nosuchversion", NOW, 90)
    assert other.counts["paired"] == 0 and other.y.size == 0


def test_a_better_challenger_is_promoted_with_its_figures_recorded(
    engine: Engine, registry: ModelRegistry, versions: Versions, store: ModelStore
) -> None:
    log_cohort(engine, versions, cohort(4000, 3, BAD_NOISE, GOOD_NOISE), CLOSED)
    outcome = promote(engine, registry, NOW, "cron", auto=True, store=store)
    assert outcome.action == "promoted", outcome.decision
    assert outcome.decision is not None and outcome.decision.rule == "non_inferior"
    after = registry.assignment()
    assert (after.champion, after.previous_champion, after.challenger) == (
        versions.challenger,
        versions.champion,
        None,
    )
    entry = registry.audit_trail()[0]
    assert (entry.action, entry.version, entry.actor) == (
        "set_champion",
        versions.challenger,
        "cron",
    )
    assert entry.replaced == versions.champion
    assert "automatic promotion test (non_inferior)" in entry.reason
    assert entry.figures["rule"] == "non_inferior" and entry.figures["auto"] is True
    assert entry.figures["roc_auc"]["difference"] > 0.03
    assert entry.figures["experiment"]["counted"] == 4000
    assert entry.figures["churners"] == entry.figures["experiment"]["churners"] > 200
    # Each model at its own stored threshold: the copy was saved with 0.3.
    assert entry.figures["thresholds"]["challenger"] == 0.3
    assert entry.figures["thresholds"]["champion"] == decision_threshold(
        registry, versions.champion, store
    )


def test_a_worse_challenger_is_cleared_and_the_champion_kept(
    engine: Engine, registry: ModelRegistry, versions: Versions, store: ModelStore
) -> None:
    log_cohort(engine, versions, cohort(4000, 4, GOOD_NOISE, BAD_NOISE), CLOSED)
    outcome = promote(engine, registry, NOW, "ops", reason="weekly review", store=store)
    assert outcome.action == "cleared"
    assert outcome.decision is not None and outcome.decision.rule == "not_non_inferior"
    after = registry.assignment()
    assert (after.champion, after.challenger) == (versions.champion, None)
    entry = registry.audit_trail()[0]
    assert (entry.action, entry.version) == ("clear_challenger", versions.challenger)
    assert entry.reason.startswith("weekly review — promotion test (not_non_inferior): roc_auc")
    assert entry.figures["roc_auc"]["difference"] < -0.03
    # Nothing left to compare: refused with a message, nothing recorded.
    again = promote(engine, registry, NOW, "ops", store=store)
    assert again.action == "no_challenger" and "no challenger" in again.message
    assert registry.audit_trail()[0] == entry


def test_too_few_churners_changes_nothing_but_is_recorded(
    engine: Engine, registry: ModelRegistry, versions: Versions, store: ModelStore
) -> None:
    group = cohort(1000, 5, BAD_NOISE, GOOD_NOISE)
    log_cohort(engine, versions, group, CLOSED)
    churners = int(group.churned.sum())
    assert churners < 200
    before, trail = registry.assignment(), registry.audit_trail()
    dry = promote(engine, registry, NOW, "ops", dry_run=True, store=store)
    assert dry.action == "deferred" and registry.audit_trail() == trail  # nothing recorded
    outcome = promote(engine, registry, NOW, "ops", store=store)
    assert outcome.action == "deferred"
    assert f"{churners} churners among 1000" in outcome.message
    assert registry.assignment() == before
    entry = registry.audit_trail()[0]
    assert (entry.action, entry.version) == (DEFERRED_ACTION, versions.challenger)
    assert entry.figures["rule"] == "too_few_churners"
    assert entry.figures["experiment"]["churners"] == churners
    assert entry.aliases == {"champion": versions.champion, "challenger": versions.challenger}


def test_labels_whose_horizon_is_open_are_not_counted(
    engine: Engine, registry: ModelRegistry, versions: Versions, store: ModelStore
) -> None:
    """Enough churners, but every stayer's outcome still open: counting them as stayers
    would decide on customers who may yet churn. The decision waits for them."""
    group = cohort(4000, 6, BAD_NOISE, GOOD_NOISE)
    log_cohort(engine, versions, group, NOW - timedelta(days=30), stay_label_after_days=20)
    before = registry.assignment()
    outcome = promote(engine, registry, NOW, "ops", store=store)
    assert outcome.action == "deferred" and outcome.decision is None
    assert outcome.outcomes is not None
    assert outcome.outcomes.counts["open"] == int((~group.churned).sum())
    assert outcome.outcomes.counts["counted"] == int(group.churned.sum()) >= 200
    assert np.all(outcome.outcomes.y == 1)  # only churners are known so far
    assert "0 customers known to have stayed" in outcome.message
    assert registry.assignment() == before
    entry = registry.audit_trail()[0]
    assert (entry.action, entry.figures["rule"]) == (DEFERRED_ACTION, "too_few_stayers")
    # After the horizon the same log decides: the better challenger is promoted.
    later = promote(engine, registry, NOW + timedelta(days=61), "ops", store=store)
    assert later.action == "promoted", later.decision


def test_registry_record_adds_an_entry_without_changing_roles(
    registry: ModelRegistry, versions: Versions
) -> None:
    before = registry.assignment()
    registry.record(versions.challenger, "promotion_deferred", "ops", "waiting", {"churners": 12})
    assert registry.assignment() == before
    entry = registry.audit_trail()[0]
    assert (entry.action, entry.actor, entry.reason, entry.figures) == (
        "promotion_deferred",
        "ops",
        "waiting",
        {"churners": 12},
    )
    with pytest.raises(ValueError, match="changes roles"):
        registry.record(versions.challenger, "set_champion", "ops", "sneaky")
    with pytest.raises(ValueError, match="actor and a reason"):
        registry.record(versions.challenger, "note", "ops", " ")


# --- The command line ---------------------------------------------------------------------

runner = CliRunner()


def _environment(registry: ModelRegistry, engine: Engine, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "CHURN_REGISTERED_MODEL": registry.name,
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "BENTOML_HOME": str(home),  # a store of its own: promote fetches the versions there
    }


def test_churn_promote_prints_the_test_and_exits_by_outcome(
    engine: Engine, registry: ModelRegistry, versions: Versions, tmp_path: Path
) -> None:
    log_cohort(engine, versions, cohort(4000, 7, GOOD_NOISE, BAD_NOISE), CLOSED)
    env = _environment(registry, engine, tmp_path / "bentoml")
    dry = run_churn(env, "promote", "--dry-run")
    assert dry.returncode == 3, dry.stderr
    header = next(line for line in dry.stdout.splitlines() if "difference" in line)
    for column in ("metric", "champion", "challenger", "interval", "margin", "verdict"):
        assert column in header
    auc = next(line for line in dry.stdout.splitlines() if "roc_auc (DeLong)" in line)
    assert "not shown" in auc
    assert "rule: not_non_inferior" in dry.stdout
    assert "dry run, nothing changed" in dry.stdout
    assert "4,000 counted" in dry.stdout
    assert registry.assignment().challenger == versions.challenger
    done = run_churn(env, "promote", "--reason", "weekly")
    assert done.returncode == 3, done.stderr
    assert registry.assignment().challenger is None
    entry = registry.audit_trail()[0]
    assert entry.action == "clear_challenger" and entry.actor.startswith("cli:")
    assert json.dumps(entry.figures)  # JSON all the way


def test_churn_promote_exit_codes_without_a_decision(
    engine: Engine, registry: ModelRegistry, versions: Versions, tmp_path: Path
) -> None:
    log_cohort(engine, versions, cohort(1000, 8, BAD_NOISE, GOOD_NOISE), CLOSED)
    env = _environment(registry, engine, tmp_path / "bentoml")
    deferred = run_churn(env, "promote")
    assert deferred.returncode == 4, deferred.stderr
    assert "no decision yet" in deferred.stdout and "rule: too_few_churners" in deferred.stdout
    assert registry.audit_trail()[0].action == DEFERRED_ACTION


def test_churn_promote_bad_usage_and_no_challenger(
    registry: ModelRegistry,
    trained: TrainingOutcome,
    engine: Engine,
    cli_env: pytest.MonkeyPatch,
) -> None:
    empty = runner.invoke(app, ["promote", "--reason", "  "])
    assert empty.exit_code == 2 and "--reason" in empty.output
    unknown = runner.invoke(app, ["promote", "--now-please"])
    assert unknown.exit_code == 2
    assert trained.tag is not None
    registry.set_champion(registry.register(trained.tag, "t", "day 0"), "t", "first")
    alone = runner.invoke(app, ["promote"])
    assert alone.exit_code == 3 and "refused: there is no challenger" in alone.output
