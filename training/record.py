"""The last steps of a training run, whatever fitted the model: held-out evaluation, plots
and reports, the drift reference, the MLflow run and the saved model (`finish_training`).

`training.train` (one machine) and `batch.training` (Dask) both end here, so a model
trained either way is stored, described and logged the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from core import __version__
from core.pipeline.predictor import ChurnPredictor
from core.pipeline.store import StoredReference, load_predictor, save_predictor
from core.schema import ID_COLUMN
from core.settings import get_settings, mlflow_tracking_uri
from core.tracking import use_experiment
from training.evaluate import evaluate_predictions
from training.plots import write_evaluation_plots
from training.sampling import sample_rows

REFERENCE_SAMPLE_ROWS = 5000


def feature_importance(booster: xgb.Booster, names: Sequence[str]) -> dict[str, float]:
    """Total gain per feature, normalised to sum to 1, every feature listed."""
    gain = {k: float(v) for k, v in booster.get_score(importance_type="total_gain").items()}  # type: ignore[arg-type]
    total = sum(gain.values()) or 1.0
    return {name: gain.get(name, 0.0) / total for name in names}


def reference_profile(features: np.ndarray, names: Sequence[str], bins: int = 10) -> dict[str, Any]:
    """Per-feature decile edges and proportions of the training features, for PSI."""
    profile = {}
    for j, name in enumerate(names):
        column = features[:, j][~np.isnan(features[:, j])]
        if column.size == 0:
            profile[name] = {"edges": [], "proportions": [], "missing_fraction": 1.0}
            continue
        edges = np.unique(np.quantile(column, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, column, side="right"), minlength=edges.size + 1)
        profile[name] = {
            "edges": edges.tolist(),
            "proportions": (counts / column.size).tolist(),
            "missing_fraction": float(1 - column.size / features.shape[0]),
        }
    return profile


def write_reports(metadata: dict[str, Any], reports_dir: Path) -> list[Path]:
    """Held-out metrics, evaluation and data-quality report as JSON beside the plots."""
    written = []
    for name in ("metrics", "evaluation", "data_quality", "training", "feature_importance"):
        path = reports_dir / f"{name}.json"
        path.write_text(json.dumps(metadata[name], indent=2))
        written.append(path)
    return written


def drift_reference(
    predictor: ChurnPredictor,
    features_frame: pd.DataFrame,
    raw: np.ndarray,
    train_idx: np.ndarray,
    test_proba: np.ndarray,
    y_train: np.ndarray,
) -> StoredReference:
    """What drift checks compare a window with: a stratified sample of training rows as
    engineered features and as raw inputs (the same rows, without the customer id), and
    the held-out rows' probabilities (out-of-sample, like served ones: in-sample
    probabilities of boosted trees are more extreme than the model serves)."""
    rows = train_idx[sample_rows(y_train, REFERENCE_SAMPLE_ROWS, 0)]
    features = pd.DataFrame(predictor.transform(raw[rows]), columns=list(predictor.feature_names))
    inputs = features_frame.iloc[rows].drop(columns=[ID_COLUMN], errors="ignore")
    return StoredReference(features, inputs.reset_index(drop=True), np.asarray(test_proba))


def record_run(
    predictor: ChurnPredictor,
    metadata: dict[str, Any],
    reference: StoredReference,
    artifacts: list[Path],
    save: bool,
) -> str | None:
    """Log the run to MLflow and save the model, each pointing at the other.

    The model's metadata carries the MLflow run id; the run carries the model tag, its
    metrics and parameters, the plots, and the stored model's files.
    """
    import mlflow

    from core.pipeline.store import BOOSTER_FILE, METADATA_FILE

    settings = get_settings()
    use_experiment(settings.mlflow_experiment, mlflow_tracking_uri())
    with mlflow.start_run() as run:
        metadata["mlflow_run_id"] = str(run.info.run_id)
        tag = (
            save_predictor(
                predictor,
                metadata,
                reference.features if reference.features is not None else pd.DataFrame(),
                {"balance": metadata["params"]["balance"]},
                reference.inputs,
                reference.predictions,
            )
            if save
            else None
        )
        mlflow.log_params(metadata["params"])
        mlflow.log_metrics({k: float(v) for k, v in metadata["metrics"].items()})
        mlflow.set_tags(
            {"model_tag": tag or "not saved", "data_hash": metadata["training"]["data_hash"]}
        )
        for path in artifacts:
            mlflow.log_artifact(str(path), "reports")
        if tag:
            stored = load_predictor(tag)
            for name in (BOOSTER_FILE, METADATA_FILE):
                mlflow.log_artifact(str(stored.path / name), "model")
        return tag


@dataclass(frozen=True)
class HeldOut:
    """The held-out rows' labels and served probabilities (and, for a synthetic table,
    the true probabilities the labels were drawn from)."""

    y: np.ndarray
    probability: np.ndarray
    truth: np.ndarray | None = None


@dataclass(frozen=True)
class ModelDescription:
    """What a training run records beside its figures on the held-out rows."""

    params: dict[str, Any]
    training: dict[str, Any]
    data_quality: dict[str, Any]


def finish_training(
    predictor: ChurnPredictor,
    held_out: HeldOut,
    description: ModelDescription,
    reference: StoredReference,
    profile_raw: np.ndarray,
    reports_dir: Path | None,
    save: bool,
) -> tuple[dict[str, Any], str | None]:
    """Evaluate on the held-out rows, write plots and reports, log the MLflow run and
    save the model: the last steps of every training (this module's, and batch's on
    Dask). `profile_raw` are raw training rows for the drift profile. Returns the
    metadata and the saved tag."""
    names = list(predictor.feature_names)
    report = evaluate_predictions(held_out.y, held_out.probability, predictor.threshold)
    importance = feature_importance(predictor.booster, names)
    reports_dir = reports_dir or get_settings().reports_dir
    reports_dir.mkdir(parents=True, exist_ok=True)
    plots = write_evaluation_plots(
        held_out.y, held_out.probability, predictor.threshold, importance, reports_dir
    )
    metadata: dict[str, Any] = {
        "package_version": __version__,
        "metrics": dict(report.metrics),
        "threshold": predictor.threshold,
        "feature_names": names,
        "extras": [column.to_dict() for column in predictor.extras],
        "params": description.params,
        "training": dict(description.training),
        "data_quality": description.data_quality,
        "evaluation": report.to_dict(),
        "feature_importance": importance,
    }
    if held_out.truth is not None:
        optimum = float(roc_auc_score(held_out.y, held_out.truth))
        metadata["training"]["bayes_optimal_auc_test"] = optimum
    metadata["reference_profile"] = reference_profile(predictor.transform(profile_raw), names)
    reports = write_reports(metadata, reports_dir)
    tag = record_run(predictor, metadata, reference, [*plots.values(), *reports], save)
    return metadata, tag
