"""The BentoML model store: one `churn_model` entry holds the whole fitted pipeline.

Layout of a stored model (all plain files, no pickle):

- ``model.json``      XGBoost booster, native format
- ``pipeline.json``   cleaner, feature transformer and calibration state, threshold
- ``metadata.yaml``   metrics, parameters, feature names, data hash, MLflow run id,
                      reference profile for drift checks
- ``reference.parquet`` a sample of training feature rows, the drift reference
- ``reference_inputs.parquet`` the same rows' raw inputs (schema columns, no customer id)
- ``reference_predictions.parquet`` churn probabilities of held-out rows: what the model
                      serves on customers it has not seen, the reference for served ones
- ``golden.json``     its served probabilities for the first reference input rows, checked
                      before a replica serves it (core/pipeline/golden.py)
- ``checksums.json``  SHA-256 of each file above and the version (core/pipeline/integrity.py),
                      verified before every load
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import xgboost as xgb
import yaml
from sklearn.base import BaseEstimator

from core.pipeline.clean import CustomerCleaner
from core.pipeline.extras import ExtraColumn
from core.pipeline.features import ChurnFeatures
from core.pipeline.golden import write_golden
from core.pipeline.integrity import verify_manifest, write_manifest
from core.pipeline.linear import LinearModel, PlattCalibration
from core.pipeline.predictor import ChurnPredictor
from core.settings import MODEL_NAME, get_settings

BOOSTER_FILE = "model.json"
PIPELINE_FILE = "pipeline.json"
METADATA_FILE = "metadata.yaml"
REFERENCE_FILE = "reference.parquet"
REFERENCE_INPUTS_FILE = "reference_inputs.parquet"
REFERENCE_PREDICTIONS_FILE = "reference_predictions.parquet"
PROBABILITY_COLUMN = "churn_probability"

E = TypeVar("E", bound=BaseEstimator)


@dataclass(frozen=True)
class StoredPredictor:
    """A predictor loaded from the store, with the tag and metadata it was saved under."""

    predictor: ChurnPredictor
    version: str
    metadata: dict[str, Any]
    path: Path
    checksum: str
    """The content checksum of its verified files (core/pipeline/integrity.py)."""


def configured_signing_key() -> bytes | None:
    """`CHURN_MODEL_SIGNING_KEY` as bytes, if set: models are signed and must be."""
    key = get_settings().model_signing_key
    return key.get_secret_value().encode() if key is not None else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def estimator_state(estimator: BaseEstimator) -> dict[str, Any]:
    """Constructor params plus learned attributes (names ending in ``_``) as JSON values."""
    learned = {
        name: _jsonable(value)
        for name, value in vars(estimator).items()
        if name.endswith("_") and not name.startswith("_")
    }
    return {"params": estimator.get_params(), "learned": learned}


def restore_estimator(cls: type[E], state: dict[str, Any]) -> E:
    """Rebuild a fitted estimator from `estimator_state` output."""
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in state["params"].items()}
    estimator = cls(**params)
    for name, value in state["learned"].items():
        setattr(estimator, name, np.asarray(value) if isinstance(value, list) else value)
    return estimator


def pipeline_state(predictor: ChurnPredictor) -> dict[str, Any]:
    """Everything but the booster, as JSON."""
    return {
        "cleaner": estimator_state(predictor.cleaner),
        "features": estimator_state(predictor.features),
        "calibration": {
            "slope": predictor.calibration.slope,
            "intercept": predictor.calibration.intercept,
        },
        "linear": predictor.linear.to_dict() if predictor.linear else None,
        "linear_weight": predictor.linear_weight,
        "threshold": predictor.threshold,
        "extras": [column.to_dict() for column in predictor.extras],
    }


def predictor_from_files(path: Path) -> ChurnPredictor:
    """Rebuild a predictor from a stored model's folder."""
    state = json.loads((path / PIPELINE_FILE).read_text())
    booster = xgb.Booster()
    booster.load_model(path / BOOSTER_FILE)
    booster.set_param({"nthread": 1})
    return ChurnPredictor(
        cleaner=restore_estimator(CustomerCleaner, state["cleaner"]),
        features=restore_estimator(ChurnFeatures, state["features"]),
        booster=booster,
        calibration=PlattCalibration(**state["calibration"]),
        threshold=float(state["threshold"]),
        extras=tuple(ExtraColumn.from_dict(c) for c in state.get("extras", [])),
        linear=LinearModel.from_dict(state["linear"]) if state.get("linear") else None,
        linear_weight=float(state.get("linear_weight", 0.0)),
    )


@dataclass(frozen=True)
class StoredReference:
    """What training kept for drift checks; a part an older model lacks is None."""

    features: pd.DataFrame | None
    """Engineered feature rows (the model matrix's columns)."""
    inputs: pd.DataFrame | None
    """Raw input rows, as a training table holds them."""
    predictions: np.ndarray | None
    """Served-style churn probabilities (held-out rows)."""

    def missing(self) -> list[str]:
        """Names of the parts this model was stored without."""
        parts = {"features": self.features, "inputs": self.inputs}
        absent = [name for name, part in parts.items() if part is None]
        return absent + (["predictions"] if self.predictions is None else [])


def load_reference(path: Path) -> StoredReference:
    """The drift reference of a (verified) model folder; absent files give None parts."""

    def read(name: str) -> pd.DataFrame | None:
        return pd.read_parquet(path / name) if (path / name).exists() else None

    predictions = read(REFERENCE_PREDICTIONS_FILE)
    return StoredReference(
        features=read(REFERENCE_FILE),
        inputs=read(REFERENCE_INPUTS_FILE),
        predictions=None
        if predictions is None
        else predictions[PROBABILITY_COLUMN].to_numpy(dtype=np.float64),
    )


def save_predictor(
    predictor: ChurnPredictor,
    metadata: dict[str, Any],
    reference: pd.DataFrame,
    labels: dict[str, str] | None = None,
    reference_inputs: pd.DataFrame | None = None,
    reference_predictions: np.ndarray | None = None,
) -> str:
    """Save the pipeline as one BentoML model; returns its tag (``churn_model:<version>``).

    `reference` (feature rows), `reference_inputs` (raw rows) and `reference_predictions`
    (probabilities) are the drift reference (`load_reference`)."""
    import bentoml

    summary = {
        "threshold": predictor.threshold,
        **{k: v for k, v in metadata.get("metrics", {}).items() if isinstance(v, float)},
    }
    with bentoml.models.create(
        MODEL_NAME,
        module=__name__,
        labels=labels or {},
        metadata=summary,
    ) as model:
        folder = Path(model.path)
        predictor.booster.save_model(folder / BOOSTER_FILE)
        (folder / PIPELINE_FILE).write_text(json.dumps(pipeline_state(predictor)))
        full = {"model_version": model.tag.version, **metadata}
        (folder / METADATA_FILE).write_text(yaml.safe_dump(full, sort_keys=False))
        reference.to_parquet(folder / REFERENCE_FILE, index=False)
        if reference_inputs is not None:
            reference_inputs.to_parquet(folder / REFERENCE_INPUTS_FILE, index=False)
            write_golden(folder, predictor, pd.read_parquet(folder / REFERENCE_INPUTS_FILE))
        if reference_predictions is not None:
            probabilities = pd.DataFrame({PROBABILITY_COLUMN: reference_predictions})
            probabilities.to_parquet(folder / REFERENCE_PREDICTIONS_FILE, index=False)
        write_manifest(folder, str(model.tag.version), configured_signing_key())
        return str(model.tag)


def load_predictor(tag: str = f"{MODEL_NAME}:latest") -> StoredPredictor:
    """Load a stored model by tag (the newest by default). Raises bentoml's NotFound."""
    import bentoml

    model = bentoml.models.get(tag)
    return stored_predictor(Path(model.path), str(model.tag.version))


def stored_predictor(path: Path, version: str) -> StoredPredictor:
    """Load the predictor and metadata from a model folder, once every file matches its
    checksum (raises `ModelIntegrityError` naming the file otherwise)."""
    checksum = verify_manifest(path, version, configured_signing_key())
    metadata = yaml.safe_load((path / METADATA_FILE).read_text())
    return StoredPredictor(predictor_from_files(path), version, metadata, path, checksum)


def list_models() -> list[str]:
    """Tags of all stored churn models, newest first."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        stored = bentoml.models.list(MODEL_NAME)
    except NotFound:  # an empty store has no entry for the name at all
        return []
    models = sorted(stored, key=lambda m: m.info.creation_time, reverse=True)
    return [str(m.tag) for m in models]
