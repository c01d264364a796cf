"""`churn retrain`: the design's Day 31 — the last months of served customers with their
labels, through the same training as `churn train`, registered as the challenger.

1. **Data.** Every label observed in the last `CHURN_RETRAIN_MONTHS` (6) months, joined to
   the prediction it judges by the monitoring join (monitoring/label_join.py: the customer's
   latest prediction served at most `CHURN_PERFORMANCE_HORIZON_DAYS` before it); per
   customer the latest label. The logged request fields are the customer's inputs, the
   label is `churned`, the id is the customer's hash (the log never holds raw ids).
   Optionally the original training table is added (`--with-table`).
2. **Hold-out.** The most recently labelled `CHURN_RETRAIN_HOLDOUT_SHARE` (20 %) of those
   customers are kept out of training: the newest behaviour is what the next model must
   serve. After training, the challenger and the current champion are both scored on them
   and compared with the promotion test (`lifecycle.promotion`): the offline comparison,
   recorded before anything serves.
3. **Registration.** The model is saved to the store (with its MLflow run, plots included,
   as `churn train` does), registered with its data window, row counts, metrics, offline
   comparison and the retraining triggers that caused it, and made the challenger (unless
   `--no-challenger`); the pending triggers are then consumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from core.pipeline.encode import encode_frame
from core.pipeline.predictor import ChurnPredictor
from core.pipeline.store import stored_predictor
from core.registry import ModelRegistry
from core.schema import ID_COLUMN
from core.settings import TARGET_COLUMN, TRUE_PROBABILITY_COLUMN, get_settings
from lifecycle.promotion import PromotionDecision, promotion_decision
from monitoring.database import PREDICTIONS
from monitoring.label_join import join_labels, read_labels, read_predictions
from monitoring.triggers import Trigger, consume_triggers, pending_triggers
from training.data import prepare_table, split_xy
from training.train import TrainingOptions, train_model

DAYS_PER_MONTH = 30
ACTOR = "churn retrain"


class RetrainRefused(RuntimeError):
    """Retraining cannot run as asked (too few labels, no champion to compare with)."""


@dataclass(frozen=True)
class LabelledHistory:
    """The log's labelled customers as a training table, and where they came from."""

    table: pd.DataFrame
    """One row per customer: the logged inputs, `churned`, `customer_id` = the hash."""
    window_start: datetime
    window_end: datetime
    logged_predictions: int
    labelled_customers: int
    churners: int


def labelled_history(
    engine: Engine, now: datetime, months: int, horizon_days: int
) -> LabelledHistory:
    """The last `months` of labels joined to the predictions they judge (module rule)."""
    start = now - timedelta(days=DAYS_PER_MONTH * months)
    predictions = read_predictions(engine, start - timedelta(days=horizon_days), now)
    labels = read_labels(engine, start, now)
    joined = join_labels(predictions, labels, horizon_days)
    joined = joined.sort_values("observed_date", kind="mergesort")
    joined = joined.drop_duplicates("customer_hash", keep="last").reset_index(drop=True)
    inputs = _logged_inputs(engine, joined["id"].tolist())
    table = pd.DataFrame([inputs[i] for i in joined["id"]])
    table[ID_COLUMN] = joined["customer_hash"].to_numpy()
    table[TARGET_COLUMN] = joined["churned"].astype(int).to_numpy()
    table["observed_date"] = joined["observed_date"].to_numpy()
    return LabelledHistory(
        table=table,
        window_start=start,
        window_end=now,
        logged_predictions=len(predictions),
        labelled_customers=len(table),
        churners=int(table[TARGET_COLUMN].sum()) if len(table) else 0,
    )


def _logged_inputs(engine: Engine, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The request fields logged with each prediction id (an `extra` object flattened)."""
    found: dict[str, dict[str, Any]] = {}
    with engine.connect() as connection:
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            query = select(PREDICTIONS.c.id, PREDICTIONS.c.features).where(
                PREDICTIONS.c.id.in_(chunk)
            )
            for row_id, features in connection.execute(query):
                fields = dict(features)
                fields.update(fields.pop("extra", None) or {})
                found[row_id] = fields
    return found


def split_newest(table: pd.DataFrame, share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, hold-out): the hold-out is the most recently labelled `share`."""
    ordered = table.sort_values("observed_date", kind="mergesort").reset_index(drop=True)
    cut = len(ordered) - max(1, round(share * len(ordered)))
    return ordered.iloc[:cut], ordered.iloc[cut:]


def holdout_probabilities(predictor: ChurnPredictor, holdout: pd.DataFrame) -> np.ndarray:
    """A model's served probabilities for the hold-out customers (the served transform)."""
    frame, _ = prepare_table(holdout.drop(columns="observed_date"), predictor.extras)
    features, _ = split_xy(frame)
    return np.asarray(predictor.predict_proba(encode_frame(features, predictor.extras)))


@dataclass(frozen=True)
class RetrainOptions:
    months: int
    with_table: pd.DataFrame | None = None
    make_challenger: bool = True
    share: float | None = None
    training: TrainingOptions = field(default_factory=TrainingOptions.from_settings)
    reports_dir: Path | None = None
    reason: str = "retraining"


@dataclass(frozen=True)
class RetrainOutcome:
    version: str
    tag: str
    history: LabelledHistory
    training_rows: int
    holdout_rows: int
    comparison: PromotionDecision
    triggers: list[Trigger]
    figures: dict[str, Any]


def retrain(
    engine: Engine,
    registry: ModelRegistry,
    options: RetrainOptions,
    now: datetime | None = None,
) -> RetrainOutcome:
    """Train a challenger on the labelled log (module docstring); raises RetrainRefused."""
    settings = get_settings()
    now = now or datetime.now(UTC)
    assignment = registry.assignment()
    if assignment.champion is None:
        raise RetrainRefused(
            "the registry has no champion to compare with: train and promote first"
        )
    history = labelled_history(engine, now, options.months, settings.performance_horizon_days)
    if history.labelled_customers < settings.retrain_min_labels:
        raise RetrainRefused(
            f"{history.labelled_customers} labelled customers in the last {options.months} "
            f"months ({history.logged_predictions} predictions logged): fewer than "
            f"CHURN_RETRAIN_MIN_LABELS = {settings.retrain_min_labels}"
        )
    learn, holdout = split_newest(history.table, settings.retrain_holdout_share)
    table = learn.drop(columns="observed_date")
    if options.with_table is not None:
        # the generator's true probability exists for synthetic tables only, not the log
        original = options.with_table.drop(columns=[TRUE_PROBABILITY_COLUMN], errors="ignore")
        table = pd.concat([original, table], ignore_index=True)
    triggers = pending_triggers(engine)
    outcome = train_model(table, options.training, options.reports_dir)
    if outcome.tag is None:
        raise RetrainRefused("training saved no model")
    champion_path = registry.fetch(assignment.champion)
    champion = stored_predictor(champion_path, str(assignment.champion_tag).split(":", 1)[1])
    y = holdout[TARGET_COLUMN].to_numpy(dtype=np.int64)
    comparison = promotion_decision(
        y,
        holdout_probabilities(champion.predictor, holdout),
        holdout_probabilities(outcome.predictor, holdout),
        (champion.predictor.threshold, outcome.predictor.threshold),
    )
    figures = {
        "window_start": history.window_start.isoformat(),
        "window_end": history.window_end.isoformat(),
        "logged_predictions": history.logged_predictions,
        "labelled_customers": history.labelled_customers,
        "churners": history.churners,
        "training_rows": len(table),
        "from_table_rows": 0 if options.with_table is None else len(options.with_table),
        "holdout_rows": len(holdout),
        "metrics": outcome.metrics,
        "offline_comparison": comparison.to_dict(),
        "compared_with": assignment.champion,
        "triggers": [t.id for t in triggers],
    }
    version = registry.register(outcome.tag, ACTOR, options.reason, figures)
    if options.make_challenger:
        registry.set_challenger(
            version, ACTOR, options.reason, {"holdout_rule": comparison.rule}, options.share
        )
    consume_triggers(engine, [t.id for t in triggers], now)
    return RetrainOutcome(
        version, outcome.tag, history, len(table), len(holdout), comparison, triggers, figures
    )
