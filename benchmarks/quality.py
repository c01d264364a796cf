"""Model quality, side by side, on IBM Telco and on synthetic data with a known optimum.

    .venv/bin/python benchmarks/quality.py --trials 100

For each data set, on the same stratified 80/20 split (random_state 42): this product's
default training (tuned, blended, calibrated), a logistic regression and XGBoost with the
original design's parameters (depth 5, learning rate 0.1, 200 trees, subsample 0.9, SMOTE)
on the same features, and on synthetic data the Bayes-optimal scorer (the generator's true
probabilities). Baselines are scored at threshold 0.5, as in shared/data/README.md.
Nothing is saved to the model store.

    .venv/bin/python benchmarks/quality.py --splits 20 --trials 30

Instead: Telco over several stratified 80/20 splits (seeds 42, 0, 1, ...), this product's
default training against the logistic regression on each; how much of a held-out figure
is the split rather than the model.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

_scratch = Path(tempfile.mkdtemp(prefix="churn-quality-"))
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_scratch / 'mlflow.db'}")

from core.pipeline.encode import encode_frame  # noqa: E402
from core.pipeline.extras import ExtraColumn, learn_categories  # noqa: E402
from core.pipeline.linear import fit_linear  # noqa: E402
from core.settings import PROJECT_ROOT, TRUE_PROBABILITY_COLUMN  # noqa: E402
from training.data import prepare_table, split_holdout, split_xy  # noqa: E402
from training.evaluate import compute_metrics  # noqa: E402
from training.generate import generate_customers  # noqa: E402
from training.profiles import load_profiled_table  # noqa: E402
from training.train import TrainingOptions, train_model  # noqa: E402
from training.tune import build_preprocessing, fit_preprocessing  # noqa: E402

TELCO = PROJECT_ROOT.parent / "shared" / "data" / "telco.csv"
DESIGN_PARAMS = {"max_depth": 5, "eta": 0.1, "subsample": 0.9, "objective": "binary:logistic"}
SEED = 42
Row = dict[str, object]


def features_split(
    frame: pd.DataFrame, extras: list[ExtraColumn], balance: str, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """The product's features for the training and held-out rows (fitted on training)."""
    typed, _ = prepare_table(frame, extras)
    extras = learn_categories(extras, typed)
    features, y = split_xy(typed)
    raw = encode_frame(features, extras)
    train, test = split_holdout(y, 0.2, seed)
    prep = build_preprocessing(balance, seed, extras)  # type: ignore[arg-type]
    x_train, y_train = fit_preprocessing(prep, raw[train], y[train])
    x_test = prep[:2].transform(raw[test])
    return x_train, y_train, x_test, y[test], typed.iloc[test]


def timed(fit: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    proba = fit()
    return proba, time.perf_counter() - started


def baselines(frame: pd.DataFrame, extras: list[ExtraColumn]) -> list[Row]:
    rows: list[Row] = []
    x_train, y_train, x_test, y_test, test_frame = features_split(frame, extras, "none")
    proba, seconds = timed(lambda: fit_linear(x_train, y_train).predict_proba(x_test))
    rows.append(
        {"model": "logistic regression", **compute_metrics(y_test, proba, 0.5), "s": seconds}
    )

    xs_train, ys_train, xs_test, _, _ = features_split(frame, extras, "smote")

    def design_xgboost() -> np.ndarray:
        booster = xgb.train(
            {**DESIGN_PARAMS, "nthread": 2}, xgb.DMatrix(xs_train, ys_train), num_boost_round=200
        )
        return np.asarray(booster.predict(xgb.DMatrix(xs_test)), dtype=np.float64)

    proba, seconds = timed(design_xgboost)
    rows.append(
        {
            "model": "XGBoost, design params + SMOTE",
            **compute_metrics(y_test, proba, 0.5),
            "s": seconds,
        }
    )
    if TRUE_PROBABILITY_COLUMN in test_frame.columns:
        truth = test_frame[TRUE_PROBABILITY_COLUMN].to_numpy(dtype=np.float64)
        rows.append(
            {
                "model": "Bayes-optimal (true probabilities)",
                **compute_metrics(y_test, truth, 0.5),
                "s": 0.0,
            }
        )
    return rows


def ours(
    frame: pd.DataFrame,
    extras: list[ExtraColumn],
    trials: int,
    balance: str | None = None,
    seed: int = SEED,
) -> Row:
    options = TrainingOptions.from_settings(
        trials=trials, seed=seed, progress=False, save=False, balance=balance
    )
    started = time.perf_counter()
    outcome = train_model(frame, options, _scratch / "reports", extras)
    seconds = time.perf_counter() - started
    label = f"this product, {trials} trials" + (f", balance {balance}" if balance else "")
    cv_auc = outcome.metadata["training"]["cv_auc_full_oof_blend"]
    return {"model": label, **outcome.metrics, "cv_auc": cv_auc, "s": seconds}


def print_table(name: str, rows: list[Row]) -> None:
    print(f"\n{name}")
    print("| model | CV ROC-AUC | ROC-AUC | F1 | threshold | Brier | ECE | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cv = f"{r['cv_auc']:.4f}" if "cv_auc" in r else "-"
        print(
            f"| {r['model']} | {cv} | {r['roc_auc']:.4f} | {r['f1']:.3f} "
            f"| {r['threshold']:.3f} | {r['brier']:.4f} | {r['ece']:.4f} | {r['s']:.0f} |"
        )


def across_splits(splits: int, trials: int) -> None:
    """Telco's held-out ROC-AUC over `splits` seeds: this product vs logistic regression."""
    telco, extras = load_profiled_table(str(TELCO), None, "telco")
    seeds = [SEED, *[s for s in range(splits) if s != SEED]][:splits]
    print(f"\nIBM Telco, {splits} stratified 80/20 splits, this product with {trials} trials")
    print("| split seed | CV ROC-AUC | held-out ROC-AUC | logistic regression | difference |")
    print("|---|---|---|---|---|")
    product, linear = [], []
    for seed in seeds:
        row = ours(telco, extras, trials, seed=seed)
        x_train, y_train, x_test, y_test, _ = features_split(telco, extras, "none", seed)
        lr_auc = compute_metrics(y_test, fit_linear(x_train, y_train).predict_proba(x_test), 0.5)
        auc, lr = float(row["roc_auc"]), float(lr_auc["roc_auc"])  # type: ignore[arg-type]
        product.append(auc)
        linear.append(lr)
        print(
            f"| {seed} | {row['cv_auc']:.4f} | {auc:.4f} | {lr:.4f} | {auc - lr:+.4f} |", flush=True
        )
    a, b = np.array(product), np.array(linear)
    print(
        f"| mean ± sd | | {a.mean():.4f} ± {a.std(ddof=1):.4f} | {b.mean():.4f} ± "
        f"{b.std(ddof=1):.4f} | {(a - b).mean():+.4f} |"
    )
    print(
        f"\nsplits with held-out ROC-AUC ≥ 0.850: this product {int((a >= 0.85).sum())}/{splits}, "
        f"logistic regression {int((b >= 0.85).sum())}/{splits}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--synthetic-rows", type=int, default=20_000)
    parser.add_argument(
        "--compare-balance",
        action="store_true",
        help="Instead: Telco trained with balance none, weight and smote, same CV folds.",
    )
    parser.add_argument(
        "--splits", type=int, default=0, help="Instead: Telco over this many 80/20 splits."
    )
    args = parser.parse_args()

    if args.splits:
        across_splits(args.splits, args.trials)
        return

    if args.compare_balance:
        telco, telco_extras = load_profiled_table(str(TELCO), None, "telco")
        rows = [ours(telco, telco_extras, args.trials, b) for b in ("none", "weight", "smote")]
        print_table(
            "IBM Telco: class-imbalance handling (CV AUC = out-of-fold, training split)", rows
        )
        return

    telco, telco_extras = load_profiled_table(str(TELCO), None, "telco")
    print_table(
        "IBM Telco (7,043 customers, held-out 1,409)",
        [ours(telco, telco_extras, args.trials), *baselines(telco, telco_extras)],
    )
    synthetic = generate_customers(args.synthetic_rows, SEED)
    print_table(
        f"Synthetic ({args.synthetic_rows:,} customers, seed {SEED})",
        [ours(synthetic, [], args.trials), *baselines(synthetic, [])],
    )


if __name__ == "__main__":
    main()
