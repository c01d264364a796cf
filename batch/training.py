"""`churn train --engine dask`: the single-machine training's steps, with the table and
the booster's fit spread over a Dask cluster.

1. The table is read and validated partition by partition (the training table's rules),
   persisted on the workers, customers repeated keep their first row (as `prepare_table`).
2. Only the labels come back to this process: the stratified train / held-out split is
   `split_holdout`'s, with the same seed, so the held-out rows are the ones
   `churn train` holds out on the same table. A tenth of the training rows is kept for
   early stopping and calibration.
3. A stratified sample of the training rows comes back too: the search sample
   (`sample_rows`, the same rows the single-machine search uses; tuned by `tune`), and
   up to `FIT_SAMPLE_ROWS` rows to fit the cleaner, feature transformer and linear model
   on (cheap, and stable at that size).
4. Every partition is transformed on its worker with the fitted transformer, and
   `xgboost.dask.DaskXGBClassifier` fits the booster on the workers' rows, stopping early
   on the calibration rows; those rows' out-of-sample probabilities give the blend
   weight, Platt calibration and threshold (`calibrate_blend`, as training's out-of-fold
   ones do).
5. The held-out rows are scored on the workers with the final predictor, and
   `finish_training` evaluates, reports, logs and saves the model as any other.

No data profile (extra columns) and no SMOTE here: the profile's vocabulary and SMOTE's
neighbours are whole-table steps of the single-machine training.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
from xgboost.dask import DaskXGBClassifier

from batch.tables import DEFAULT_BLOCKSIZE, BatchInputError, read_table, validated
from core.pipeline.clean import CustomerCleaner
from core.pipeline.encode import encode_frame
from core.pipeline.features import ChurnFeatures
from core.pipeline.linear import LinearModel, PlattCalibration, fit_linear
from core.pipeline.predictor import ChurnPredictor
from core.schema import ID_COLUMN, RAW_COLUMNS
from core.settings import TARGET_COLUMN, TRUE_PROBABILITY_COLUMN
from training.data import DataQualityReport, split_holdout, split_xy
from training.record import HeldOut, ModelDescription, drift_reference, finish_training
from training.sampling import sample_rows
from training.train import TrainingOptions, calibrate_blend, search
from training.tune import (
    EARLY_STOPPING_ROUNDS,
    MAX_TREES,
    booster_params,
    build_preprocessing,
    fit_preprocessing,
)

FIT_SAMPLE_ROWS = 200_000
"""Training rows the cleaner, feature transformer and linear model are fitted on."""
CALIBRATION_SHARE = 0.1
"""Share of the training rows kept for early stopping and calibration."""
POSITION = "_position"
ROLE = "_role"
FIT, CALIBRATION, TEST = 0, 1, 2


@dataclass(frozen=True)
class DaskTrainingRun:
    """What `train_on_dask` produced: the same figures and metadata `churn train` records."""

    predictor: ChurnPredictor
    metrics: dict[str, float]
    metadata: dict[str, Any]
    tag: str | None


def _empty(dtypes: dict[str, Any]) -> pd.DataFrame:
    """An empty frame of these columns and types: a partition function's `meta`."""
    return pd.DataFrame({name: pd.Series(dtype=kind) for name, kind in dtypes.items()})


def _typed(part: pd.DataFrame, partition_info: dict[str, Any] | None = None) -> pd.DataFrame:
    return validated(part, partition_info, require_target=True)


def _numbered(
    part: pd.DataFrame, offsets: np.ndarray, partition_info: dict[str, Any] | None = None
) -> pd.DataFrame:
    """The partition with each row's position in the whole table."""
    start = int(offsets[partition_info["number"]]) if partition_info else 0
    return part.assign(**{POSITION: np.arange(start, start + len(part), dtype=np.int64)})


def _numbered_frame(frame: Any) -> Any:
    lengths = np.asarray(frame.map_partitions(len).compute(), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    meta = frame._meta.assign(**{POSITION: np.array([], dtype=np.int64)})
    return frame.map_partitions(_numbered, offsets, meta=meta)


def _with_roles(part: pd.DataFrame, roles: np.ndarray) -> pd.DataFrame:
    return part.assign(**{ROLE: roles[part[POSITION].to_numpy()]})


def _rows_at(part: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    return part[np.isin(part[POSITION].to_numpy(), positions)]


def _row_hashes(part: pd.DataFrame) -> np.ndarray:
    return pd.util.hash_pandas_object(part.drop(columns=POSITION), index=False).to_numpy()


def deduplicated(frame: Any) -> tuple[Any, int]:
    """Customers repeated in the table keep their first row (by position), as
    `training.data.deduplicate` does; only the repeated ids travel to this process."""
    counts = frame[ID_COLUMN].value_counts()
    repeated = counts[counts > 1].compute()
    if repeated.empty:
        return frame, 0
    rows = frame[frame[ID_COLUMN].isin(list(repeated.index))][[ID_COLUMN, POSITION]].compute()
    rows = rows.sort_values(POSITION, kind="mergesort")
    dropped = rows.loc[rows[ID_COLUMN].duplicated(keep="first"), POSITION].to_numpy()
    kept = frame[~frame[POSITION].isin(dropped)].drop(columns=POSITION)
    return _numbered_frame(kept), len(dropped)


def _features(
    part: pd.DataFrame, cleaner: CustomerCleaner, transformer: ChurnFeatures
) -> pd.DataFrame:
    """The model's feature matrix of a partition, with its labels and roles."""
    inputs, y = split_xy(part.drop(columns=[POSITION, ROLE]))
    x = transformer.transform(cleaner.transform(encode_frame(inputs)))
    out = pd.DataFrame(x, columns=list(transformer.get_feature_names_out()))
    out[TARGET_COLUMN] = y
    out[ROLE] = part[ROLE].to_numpy()
    return out


def _calibration_scores(
    part: pd.DataFrame, booster_only: ChurnPredictor, linear: LinearModel | None
) -> pd.DataFrame:
    """Trees' and linear model's probabilities of calibration rows (features given)."""
    x = part.drop(columns=[TARGET_COLUMN, ROLE]).to_numpy(dtype=np.float64)
    trees = booster_only.raw_probability(x)
    return pd.DataFrame(
        {
            "trees": trees,
            "linear": linear.predict_proba(x) if linear is not None else np.nan,
            TARGET_COLUMN: part[TARGET_COLUMN].to_numpy(),
        }
    )


def _test_scores(part: pd.DataFrame, predictor: ChurnPredictor) -> pd.DataFrame:
    """Served probabilities of held-out rows, their labels and (synthetic) truth."""
    inputs, y = split_xy(part.drop(columns=[POSITION, ROLE]))
    truth = part.get(TRUE_PROBABILITY_COLUMN)
    return pd.DataFrame(
        {
            "probability": predictor.predict_proba(encode_frame(inputs)),
            TARGET_COLUMN: y,
            "truth": np.nan if truth is None else pd.to_numeric(truth).to_numpy(),
        }
    )


def _quality(frame: Any, rows_in: int, y: np.ndarray, duplicates: int) -> dict[str, Any]:
    present = [name for name in RAW_COLUMNS if name in frame.columns]
    missing = frame[present].isna().mean().compute()
    return DataQualityReport(
        rows_in=rows_in,
        rows_out=len(y),
        duplicates_dropped=duplicates,
        missing_fraction={name: float(missing[name]) for name in present},
        churn_rate=float(y.mean()) if len(y) else None,
    ).to_dict()


def train_on_dask(
    source: str,
    options: TrainingOptions,
    client: Any,
    reports_dir: Path | None = None,
    blocksize: int = DEFAULT_BLOCKSIZE,
    say: Callable[[str], None] = print,
) -> DaskTrainingRun:
    """Train on the table at `source` with the cluster of `client` (module docstring)."""
    if options.balance == "smote":
        raise BatchInputError("--balance smote needs the whole table in one process")
    started = time.perf_counter()
    raw_frame = read_table(source, blocksize)
    typed = raw_frame.map_partitions(_typed, meta=_typed(raw_frame._meta))
    say(f"validating {raw_frame.npartitions} partition(s) on the cluster")
    typed = _numbered_frame(typed.persist())
    rows_in = len(typed)
    typed, duplicates = deduplicated(typed)
    y = typed[TARGET_COLUMN].compute().to_numpy(dtype=np.int64)

    train_idx, test_idx = split_holdout(y, options.test_size, options.seed)
    y_train = y[train_idx]
    _, calibration_rel = split_holdout(y_train, CALIBRATION_SHARE, options.seed)
    fit_rel = np.setdiff1d(np.arange(len(train_idx)), calibration_rel)
    fit_sample = train_idx[fit_rel[sample_rows(y_train[fit_rel], FIT_SAMPLE_ROWS, options.seed)]]
    searched = train_idx[sample_rows(y_train, options.search_rows, options.seed)]
    roles = np.full(len(y), FIT, dtype=np.int8)
    roles[train_idx[calibration_rel]] = CALIBRATION
    roles[test_idx] = TEST
    shared_roles = dask.delayed(roles, pure=True)
    typed = typed.map_partitions(
        _with_roles, shared_roles, meta=typed._meta.assign(**{ROLE: pd.Series(dtype=np.int8)})
    ).persist()

    wanted = np.union1d(fit_sample, searched)
    say(f"{len(y):,} customers: fetching {len(wanted):,} sampled rows for search and transformer")
    local = typed.map_partitions(_rows_at, wanted, meta=typed._meta).compute()
    local = local.sort_values(POSITION, kind="mergesort").reset_index(drop=True)
    local_positions = local[POSITION].to_numpy()
    local_inputs, local_y = split_xy(local.drop(columns=[POSITION, ROLE]))
    local_raw = encode_frame(local_inputs)
    search_rows = np.searchsorted(local_positions, searched)
    fit_rows = np.searchsorted(local_positions, fit_sample)

    tuning = search(local_raw[search_rows], local_y[search_rows], options)
    tuned_at = time.perf_counter()
    prep = build_preprocessing(options.balance, options.seed)
    x_fit, y_fit = fit_preprocessing(prep, local_raw[fit_rows], local_y[fit_rows])
    cleaner, transformer = prep.named_steps["clean"], prep.named_steps["features"]
    use_linear = options.linear_weight is None or options.linear_weight > 0
    linear = fit_linear(x_fit, y_fit) if use_linear else None

    names = list(transformer.get_feature_names_out())
    meta = _empty({**dict.fromkeys(names, np.float64), TARGET_COLUMN: np.int64, ROLE: np.int8})
    features = typed.map_partitions(
        _features, dask.delayed(cleaner), dask.delayed(transformer), meta=meta
    )
    fit_part = features[features[ROLE] == FIT]
    calibration_part = features[features[ROLE] == CALIBRATION]
    positives = max(int(y[roles == FIT].sum()), 1)
    weight = (int((roles == FIT).sum()) - positives) / positives
    params = booster_params(tuning.best_params, options.balance, weight)
    params.pop("nthread", None)  # each worker uses its own threads
    classifier = DaskXGBClassifier(
        **params, n_estimators=MAX_TREES, early_stopping_rounds=EARLY_STOPPING_ROUNDS
    )
    classifier.client = client
    say(f"fitting the booster on {int((roles == FIT).sum()):,} rows across the cluster")
    classifier.fit(
        fit_part[names],
        fit_part[TARGET_COLUMN],
        eval_set=[(calibration_part[names], calibration_part[TARGET_COLUMN])],
        verbose=False,
    )
    trees = int(classifier.best_iteration) + 1
    booster = classifier.get_booster()[:trees]

    booster_only = ChurnPredictor(cleaner, transformer, booster, PlattCalibration.identity(), 0.5)
    scores_meta = _empty({"trees": np.float64, "linear": np.float64, TARGET_COLUMN: np.int64})
    scores = calibration_part.map_partitions(
        _calibration_scores, dask.delayed(booster_only), dask.delayed(linear), meta=scores_meta
    ).compute()
    calibration_y = scores[TARGET_COLUMN].to_numpy(dtype=np.int64)
    linear_scores = scores["linear"].to_numpy() if linear is not None else None
    calibration, threshold, figures = calibrate_blend(
        scores["trees"].to_numpy(), linear_scores, calibration_y, options.linear_weight
    )
    predictor = ChurnPredictor(
        cleaner,
        transformer,
        booster,
        calibration,
        threshold,
        (),
        linear,
        figures["weight"] if linear is not None else 0.0,
    )

    say(f"scoring the {len(test_idx):,} held-out rows on the cluster")
    test_meta = _empty({"probability": np.float64, TARGET_COLUMN: np.int64, "truth": np.float64})
    held = typed[typed[ROLE] == TEST].map_partitions(
        _test_scores, dask.delayed(predictor), meta=test_meta
    )
    tested = held.compute()
    parts = typed.drop(columns=ROLE).to_delayed()
    hashes = dask.compute(*[dask.delayed(_row_hashes)(part) for part in parts])
    truth = tested["truth"].to_numpy()
    held_out = HeldOut(
        tested[TARGET_COLUMN].to_numpy(dtype=np.int64),
        tested["probability"].to_numpy(),
        None if np.isnan(truth).all() else truth,
    )
    training = {
        "engine": "dask",
        "workers": len(client.scheduler_info()["workers"]),
        "partitions": int(typed.npartitions),
        "rows": len(y),
        "train_rows": len(train_idx),
        "test_rows": len(test_idx),
        "fit_rows": int((roles == FIT).sum()),
        "calibration_rows": len(calibration_rel),
        "transformer_rows": len(fit_sample),
        "data_hash": hashlib.sha256(np.concatenate(list(hashes)).tobytes()).hexdigest(),
        "seed": options.seed,
        "test_size": options.test_size,
        "trials": options.trials,
        "trials_completed": tuning.trials_completed,
        "trials_pruned": tuning.trials_pruned,
        "search_rows": len(searched),
        "cv_auc_search": tuning.best_cv_auc,
        "calibration_auc_trees": figures["trees_auc"],
        "calibration_auc_blend": figures["blend_auc"],
        "tuning_seconds": round(tuned_at - started, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
    }
    params_out = {
        **tuning.best_params,
        "n_estimators": trees,
        "balance": options.balance,
        "linear_weight": figures["weight"],
    }
    reference = drift_reference(
        predictor, local_inputs, local_raw, fit_rows, held_out.probability, local_y[fit_rows]
    )
    description = ModelDescription(params_out, training, _quality(typed, rows_in, y, duplicates))
    metadata, tag = finish_training(
        predictor, held_out, description, reference, local_raw[fit_rows], reports_dir, options.save
    )
    return DaskTrainingRun(predictor, metadata["metrics"], metadata, tag)
