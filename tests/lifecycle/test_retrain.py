"""`churn retrain` (issue 16): the last months of served customers with their labels,
through the same training, registered as the challenger with its window, rows, metrics,
offline comparison and triggers — against a real SQLite log and a real MLflow registry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bentoml
import numpy as np
import pandas as pd
import pytest
from bentoml._internal.models import ModelStore
from sqlalchemy import Engine, update

from core.pipeline.store import list_models
from core.registry import ModelRegistry
from core.settings import get_settings
from launchers.server_process import request_bodies
from lifecycle.retrain import RetrainOptions, RetrainRefused, retrain
from monitoring.database import PREDICTIONS, make_engine, upgrade_schema
from monitoring.feedback import Label, store_labels
from monitoring.identity import customer_hash
from monitoring.records import PredictionRecord, insert_rows, record_row
from monitoring.triggers import pending_triggers, record_trigger
from tests.core.test_registry import copy_model
from tests.monitoring.conftest import SECRET
from training.generate import generate_customers
from training.train import TrainingOptions, TrainingOutcome

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CUSTOMERS = 1600
OLD = 200
"""Customers served and labelled 8 months ago: outside the 6-month window."""


@pytest.fixture(autouse=True)
def session_store_unchanged() -> Iterator[None]:
    """Retraining saves to the process's store, the session's: its `:latest` must stay the
    trained model every other test serves."""
    before = set(list_models())
    yield
    for tag in set(list_models()) - before:
        bentoml.models.delete(tag)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    upgrade_schema(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def registry(tmp_path: Path, trained: TrainingOutcome) -> ModelRegistry:
    registry = ModelRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", "churn_retrain")
    source = ModelStore(tmp_path / "source")
    version = registry.register(copy_model(trained, source), "test", "day 0", store=source)
    registry.set_champion(version, "test", "day 0")
    return registry


def log_and_label(engine: Engine, frame: pd.DataFrame, served: datetime) -> None:
    """Log each customer as served at `served` and label them 30 days later."""
    bodies = request_bodies(frame.drop(columns=["churned", "true_churn_probability"]))
    rows = [
        record_row(
            PredictionRecord(
                request_id="r",
                customer_hash=customer_hash(body["customer_id"], SECRET),
                model_version="v1",
                features=dict(body),
                churn_probability=0.5,
                will_churn=False,
                risk_level="medium",
                latency_ms=1.0,
                cache="none",
                endpoint="batch",
                created_at=served + timedelta(seconds=i),
            )
        )
        for i, body in enumerate(bodies)
    ]
    with engine.begin() as connection:
        insert_rows(connection, rows)
    observed = (served + timedelta(days=30)).date()
    labels = [
        Label(customer_id=str(c), churned=bool(y), observed_date=observed - timedelta(days=i % 20))
        for i, (c, y) in enumerate(zip(frame["customer_id"], frame["churned"], strict=True))
    ]
    store_labels(engine, labels, SECRET)


@pytest.fixture
def history(engine: Engine) -> pd.DataFrame:
    frame = generate_customers(CUSTOMERS + OLD, seed=5)
    frame["customer_id"] = [f"c{i}" for i in range(len(frame))]
    log_and_label(engine, frame.iloc[:OLD], NOW - timedelta(days=240))
    log_and_label(engine, frame.iloc[OLD:], NOW - timedelta(days=60))
    return frame


def options(**overrides: object) -> RetrainOptions:
    training = TrainingOptions.from_settings(trials=2, search_rows=1000, progress=False)
    return RetrainOptions(months=6, training=training, **overrides)  # type: ignore[arg-type]


def test_retrain_registers_a_challenger_from_the_labelled_window(
    engine: Engine, registry: ModelRegistry, history: pd.DataFrame
) -> None:
    trigger = record_trigger(engine, "drift", "v1", ["tenure_months"], {"psi": 0.4}, NOW)
    outcome = retrain(engine, registry, options(), NOW)
    assert outcome.history.labelled_customers == CUSTOMERS  # the 8-month-old ones left out
    assert outcome.history.churners == int(history["churned"].iloc[OLD:].sum())
    share = get_settings().retrain_holdout_share
    assert outcome.holdout_rows == round(share * CUSTOMERS)
    assert outcome.training_rows == CUSTOMERS - outcome.holdout_rows
    assignment = registry.assignment()
    assert assignment.challenger == outcome.version and assignment.challenger_tag == outcome.tag
    assert assignment.challenger_share == pytest.approx(get_settings().challenger_share)
    registered = next(e for e in registry.audit_trail() if e.action == "register")
    assert registered.version == outcome.version and registered.actor == "churn retrain"
    figures = registered.figures
    assert figures["triggers"] == [trigger]
    assert figures["holdout_rows"] == outcome.holdout_rows
    assert figures["offline_comparison"]["customers"] == outcome.holdout_rows
    assert set(figures["metrics"]) >= {"roc_auc", "brier"}
    assert pending_triggers(engine) == []  # consumed once the challenger is registered


def test_the_hold_out_is_the_newest_labels_and_is_not_trained_on(
    engine: Engine, registry: ModelRegistry, history: pd.DataFrame
) -> None:
    from lifecycle.retrain import labelled_history, split_newest

    found = labelled_history(engine, NOW, 6, get_settings().performance_horizon_days)
    learn, holdout = split_newest(found.table, 0.2)
    assert learn["observed_date"].max() <= holdout["observed_date"].min()
    assert set(learn["customer_id"]).isdisjoint(holdout["customer_id"])
    assert len(set(found.table["customer_id"])) == len(found.table)  # one row per customer
    # the logged inputs are the customers' fields, the label is theirs
    by_hash = {
        customer_hash(str(c), SECRET): y
        for c, y in zip(history["customer_id"], history["churned"], strict=True)
    }
    assert (
        found.table["churned"].to_numpy()
        == np.array([by_hash[h] for h in found.table["customer_id"]])
    ).all()
    sent = history.set_index(history["customer_id"].map(lambda c: customer_hash(str(c), SECRET)))
    assert np.allclose(
        found.table.set_index("customer_id")["monthly_charges"],
        sent.loc[found.table["customer_id"], "monthly_charges"],
    )


def test_too_few_labels_are_refused_and_no_trigger_is_consumed(
    engine: Engine, registry: ModelRegistry, history: pd.DataFrame
) -> None:
    record_trigger(engine, "drift", "v1", ["tenure_months"], {"psi": 0.4}, NOW)
    with engine.begin() as connection:  # all but 500 of the window's predictions gone
        connection.execute(
            update(PREDICTIONS)
            .where(PREDICTIONS.c.created_at > NOW - timedelta(days=61))
            .where(PREDICTIONS.c.request_id == "r")
            .values(created_at=NOW - timedelta(days=400))
        )
    with pytest.raises(RetrainRefused, match="CHURN_RETRAIN_MIN_LABELS"):
        retrain(engine, registry, options(), NOW)
    assert len(pending_triggers(engine)) == 1
    assert registry.assignment().challenger is None


def test_the_original_table_can_be_added(
    engine: Engine, registry: ModelRegistry, history: pd.DataFrame
) -> None:
    original = generate_customers(800, seed=9)
    outcome = retrain(engine, registry, options(with_table=original, make_challenger=False), NOW)
    assert outcome.training_rows == CUSTOMERS - outcome.holdout_rows + 800
    assert outcome.figures["from_table_rows"] == 800
    assert registry.assignment().challenger is None  # --no-challenger
