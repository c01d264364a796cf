"""Other models made from the session's trained one, each saved as a new BentoML version
with its own golden predictions and checksums: what a retraining would hand the registry,
without training again."""

from __future__ import annotations

import json
from pathlib import Path

import bentoml
import pandas as pd
from bentoml._internal.models import ModelStore

from core.pipeline.golden import write_golden
from core.pipeline.integrity import write_manifest
from core.pipeline.store import PIPELINE_FILE, REFERENCE_INPUTS_FILE, predictor_from_files
from tests.core.test_registry import copy_model
from training.train import TrainingOutcome


def variant(
    trained: TrainingOutcome,
    store: ModelStore,
    intercept_shift: float = 0.0,
    extra_column: str | None = None,
) -> str:
    """A new model version: its calibration moved by `intercept_shift` (other
    probabilities), or with an extra input column it expects in `extra` (another feature
    contract). Its golden predictions are its own; returns the tag."""
    tag = copy_model(trained, store)
    folder = Path(bentoml.models.get(tag, _model_store=store).path)
    state = json.loads((folder / PIPELINE_FILE).read_text())
    state["calibration"]["intercept"] += intercept_shift
    if extra_column is not None:
        state["extras"] = [*state.get("extras", []), {"name": extra_column, "kind": "number"}]
    (folder / PIPELINE_FILE).write_text(json.dumps(state))
    if extra_column is None:
        inputs = pd.read_parquet(folder / REFERENCE_INPUTS_FILE)
        write_golden(folder, predictor_from_files(folder), inputs)
    write_manifest(folder, tag.split(":")[1])
    return tag
