"""Training: table → tuned, calibrated, evaluated `ChurnPredictor` in the model store.

The steps, each a small function below:

1. validate and de-duplicate the table, encode it, split 80/20 (stratified);
2. tune on (a sample of) the training split with 5-fold CV (`training.tune`);
3. successive halving's last rung: when the search ran on a sample, its best few
   candidates are cross-validated again on the whole training split and the best wins;
   the winner's out-of-fold predictions give the calibration map, the decision
   threshold and the number of trees;
4. fit the final pipeline on the whole training split, score the held-out 20 %;
5. plots, MLflow run, and one BentoML model holding everything.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from core.pipeline.encode import encode_frame
from core.pipeline.extras import ExtraColumn, learn_categories
from core.pipeline.linear import LinearModel, PlattCalibration, fit_linear
from core.pipeline.predictor import ChurnPredictor
from core.settings import TRUE_PROBABILITY_COLUMN, get_settings
from training.bad_rows import BadRowsPolicy, BadRowsReport, report_path, validate_or_skip
from training.data import prepared, split_holdout, split_xy
from training.evaluate import choose_threshold
from training.record import HeldOut, ModelDescription, drift_reference, finish_training
from training.sampling import sample_rows
from training.tune import (
    Balance,
    CVResult,
    PreparedFold,
    TuningResult,
    booster_params,
    build_preprocessing,
    cross_validate,
    fit_preprocessing,
    linear_oof,
    prepare_folds,
    tune,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingOptions:
    """What `churn train` lets a user choose; defaults come from `Settings`."""

    trials: int
    seed: int
    balance: Balance = "none"
    linear_weight: float | None = None  # None: chosen on out-of-fold predictions
    search_rows: int = 20_000
    finalists: int = 3
    cv_folds: int = 5
    test_size: float = 0.2
    progress: bool = True
    save: bool = True
    on_bad_rows: BadRowsPolicy = "fail"  # skip: set rows breaking a rule aside (bad_rows.py)

    @classmethod
    def from_settings(cls, **overrides: Any) -> TrainingOptions:
        s = get_settings()
        defaults: dict[str, Any] = {
            "trials": s.trials,
            "seed": s.seed,
            "search_rows": s.search_rows,
            "finalists": s.search_finalists,
            "cv_folds": s.cv_folds,
            "test_size": s.test_size,
            "balance": s.balance,
            "linear_weight": s.linear_weight,
        }
        defaults.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**defaults)


@dataclass
class TrainingOutcome:
    """What a training run produced."""

    predictor: ChurnPredictor
    metrics: dict[str, float]
    metadata: dict[str, Any]
    tag: str | None
    test_raw: np.ndarray
    test_y: np.ndarray
    test_frame: pd.DataFrame
    bad_rows: BadRowsReport | None = None


def frame_hash(frame: pd.DataFrame) -> str:
    """A content hash of the training table, recorded with the model."""
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(row_hashes.tobytes()).hexdigest()


@dataclass
class FinalRound:
    """The chosen candidate, cross-validated on the whole training split."""

    params: dict[str, Any]
    folds: list[PreparedFold]
    cv: CVResult
    finalist_aucs: list[float]


def final_round(
    raw: np.ndarray,
    y: np.ndarray,
    finalists: Sequence[dict[str, Any]],
    options: TrainingOptions,
    extras: Sequence[ExtraColumn] = (),
) -> FinalRound:
    """Successive halving's last rung: the search's best candidates (found on a sample),
    each cross-validated on every training row; the best of them wins.

    The winner's out-of-fold predictions are kept: calibration needs them anyway.
    """
    folds = prepare_folds(raw, y, options.cv_folds, options.balance, options.seed, extras)
    results = [
        cross_validate(params, folds, options.balance, len(y))
        for params in tqdm(finalists, desc="finalists on all rows", disable=not options.progress)
    ]
    aucs = [r.auc for r in results]
    best = int(np.argmax(aucs))
    return FinalRound(dict(finalists[best]), folds, results[best], aucs)


def calibrate(
    y: np.ndarray, final: FinalRound, options: TrainingOptions
) -> tuple[PlattCalibration, float, int, dict[str, float]]:
    """Out-of-fold predictions on the whole training split → calibration, threshold, trees.

    The out-of-fold probability is the blend the final model will produce (trees and,
    with a linear weight, the logistic regression), so calibration and threshold are
    learned on exactly what will be served.
    """
    weight = options.linear_weight
    use_linear = weight is None or weight > 0
    linear = linear_oof(final.folds, len(y)) if use_linear else None
    calibration, threshold, oof = calibrate_blend(final.cv.oof, linear, y, weight)
    oof["trees_auc"] = final.cv.auc  # the folds' mean, as the search ranks candidates
    return calibration, threshold, int(np.mean(final.cv.best_iterations)), oof


def calibrate_blend(
    trees: np.ndarray, linear: np.ndarray | None, y: np.ndarray, weight: float | None
) -> tuple[PlattCalibration, float, dict[str, float]]:
    """Out-of-sample trees' (and linear model's) probabilities → the blend weight (chosen
    here when `weight` is None), Platt calibration and F1-optimal threshold of the blend."""
    blend = trees
    if linear is not None:
        if weight is None:
            weight = choose_linear_weight(trees, linear, y)
        blend = (1 - weight) * trees + weight * linear
    calibration = PlattCalibration.fit(blend, y)
    threshold = choose_threshold(y, calibration(blend))
    figures = {
        "trees_auc": float(roc_auc_score(y, trees)),
        "blend_auc": float(roc_auc_score(y, blend)),
        "weight": float(weight or 0.0),
    }
    return calibration, threshold, figures


def choose_linear_weight(trees: np.ndarray, linear: np.ndarray, y: np.ndarray) -> float:
    """The linear model's share of the blend, by out-of-fold ROC-AUC (0 to 0.8)."""
    grid = np.round(np.arange(0.0, 0.81, 0.1), 1)
    scores = [roc_auc_score(y, (1 - w) * trees + w * linear) for w in grid]
    return float(grid[int(np.argmax(scores))])


def fit_final(
    raw: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any],
    n_trees: int,
    options: TrainingOptions,
    extras: Sequence[ExtraColumn] = (),
) -> tuple[Any, Any, xgb.Booster, LinearModel | None]:
    """Fit cleaner, features (and SMOTE), booster and linear model on the training split."""
    prep = build_preprocessing(options.balance, options.seed, extras)
    x, y_fit = fit_preprocessing(prep, raw, y)
    n_pos = max(int(y_fit.sum()), 1)
    dtrain = xgb.QuantileDMatrix(
        x, y_fit, feature_names=list(prep[:2].get_feature_names_out()), max_bin=256
    )
    booster = xgb.train(
        booster_params(params, options.balance, (len(y_fit) - n_pos) / n_pos),
        dtrain,
        num_boost_round=n_trees,
    )
    use_linear = options.linear_weight is None or options.linear_weight > 0
    linear = fit_linear(x, y_fit) if use_linear else None
    return prep.named_steps["clean"], prep.named_steps["features"], booster, linear


def search(
    raw: np.ndarray,
    y: np.ndarray,
    options: TrainingOptions,
    extras: Sequence[ExtraColumn] = (),
    finalists: int = 1,
) -> TuningResult:
    """The hyperparameter search on (a sample of) the training rows, as the options say."""
    return tune(
        raw,
        y,
        trials=options.trials,
        n_folds=options.cv_folds,
        balance=options.balance,
        seed=options.seed,
        progress=options.progress,
        extras=extras,
        finalists=finalists,
    )


def train_model(
    table: pd.DataFrame,
    options: TrainingOptions,
    reports_dir: Path | None = None,
    extras: Sequence[ExtraColumn] = (),
    bad_rows_report: Path | None = None,
) -> TrainingOutcome:
    """Run the whole training procedure on a customer table (see module docstring).

    `extras` are a data profile's extra columns (present in `table` under their names).
    With `options.on_bad_rows` ``skip``, the bad-rows report goes to `bad_rows_report`
    (default: ``bad_rows.json`` in the reports folder).
    """
    started = time.perf_counter()
    typed, skipped = validate_or_skip(
        table,
        extras,
        options.on_bad_rows,
        get_settings().min_training_rows,
        2 * options.cv_folds,
        bad_rows_report or report_path(None, reports_dir),
    )
    frame, quality = prepared(table, typed, skipped.rows_skipped if skipped else 0)
    extras = learn_categories(extras, frame)
    features_frame, y = split_xy(frame)
    raw = encode_frame(features_frame, extras)
    train_idx, test_idx = split_holdout(y, options.test_size, options.seed)
    raw_train, y_train = raw[train_idx], y[train_idx]

    search_idx = sample_rows(y_train, options.search_rows, options.seed)
    tuning = search(
        raw_train[search_idx],
        y_train[search_idx],
        options,
        extras,
        # A search that saw every training row has nothing to confirm on more rows.
        finalists=options.finalists if len(search_idx) < len(y_train) else 1,
    )
    tuned_at = time.perf_counter()
    final = final_round(raw_train, y_train, tuning.finalists, options, extras)
    calibration, threshold, n_trees, oof = calibrate(y_train, final, options)
    cleaner, transformer, booster, linear = fit_final(
        raw_train, y_train, final.params, n_trees, options, extras
    )
    predictor = ChurnPredictor(
        cleaner,
        transformer,
        booster,
        calibration,
        threshold,
        tuple(extras),
        linear,
        oof["weight"] if linear else 0.0,
    )
    test_proba = predictor.predict_proba(raw[test_idx])
    truth = None
    if TRUE_PROBABILITY_COLUMN in table.columns:
        truth = pd.to_numeric(frame[TRUE_PROBABILITY_COLUMN]).to_numpy()[test_idx]
    params = {
        **final.params,
        "n_estimators": n_trees,
        "balance": options.balance,
        "linear_weight": oof["weight"],
    }
    figures = {
        "rows": len(frame),
        "train_rows": len(train_idx),
        "test_rows": len(test_idx),
        "data_hash": frame_hash(frame),
        "seed": options.seed,
        "test_size": options.test_size,
        "trials": options.trials,
        "trials_completed": tuning.trials_completed,
        "trials_pruned": tuning.trials_pruned,
        "search_rows": len(search_idx),
        "cv_auc_search": tuning.best_cv_auc,
        "finalists": len(final.finalist_aucs),
        "cv_auc_finalists": final.finalist_aucs,
        "cv_auc_full_oof": oof["trees_auc"],
        "cv_auc_full_oof_blend": oof["blend_auc"],
        "tuning_seconds": round(tuned_at - started, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
    }
    reference = drift_reference(predictor, features_frame, raw, train_idx, test_proba, y_train)
    held_out = HeldOut(y[test_idx], test_proba, truth)
    description = ModelDescription(params, figures, quality.to_dict())
    metadata, tag = finish_training(
        predictor, held_out, description, reference, raw_train, reports_dir, options.save
    )
    metrics = metadata["metrics"]
    return TrainingOutcome(
        predictor,
        metrics,
        metadata,
        tag,
        raw[test_idx],
        y[test_idx],
        features_frame.iloc[test_idx].reset_index(drop=True),
        skipped,
    )
