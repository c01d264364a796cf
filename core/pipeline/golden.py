"""Golden predictions: what a stored model answered for a few known customers when it was
saved, so a copy loaded elsewhere (another replica, another library build) can be checked
to answer the same before it takes traffic.

The customers are the first rows of the model's own drift reference inputs
(``reference_inputs.parquet``, typed by parquet), scored by the served computation
(`ChurnPredictor.probability_and_reasons`); the probabilities are kept in ``golden.json``,
which the manifest covers like every other file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from core.pipeline.encode import encode_frame
from core.pipeline.predictor import ChurnPredictor

GOLDEN_FILE = "golden.json"
GOLDEN_ROWS = 16
TOLERANCE = 1e-6
"""Largest difference of a golden probability still taken as the same answer: far above
float rounding between builds, far below any change of model."""


def golden_probabilities(predictor: ChurnPredictor, inputs: pd.DataFrame) -> np.ndarray:
    """The served probabilities of the first `GOLDEN_ROWS` input rows."""
    raw = encode_frame(inputs.head(GOLDEN_ROWS), predictor.extras)
    probability, _ = predictor.probability_and_reasons(predictor.transform(raw), 0)
    return np.asarray(probability, dtype=np.float64)


def write_golden(folder: Path, predictor: ChurnPredictor, inputs: pd.DataFrame) -> None:
    """Record the golden probabilities next to the model's files."""
    probabilities = golden_probabilities(predictor, inputs).tolist()
    (folder / GOLDEN_FILE).write_text(json.dumps({"probabilities": probabilities}))


def golden_problem(
    folder: Path, predictor: ChurnPredictor, inputs: pd.DataFrame | None
) -> str | None:
    """Why `predictor` (loaded from `folder`) does not answer its golden customers as it did
    when saved; None when it does."""
    path = folder / GOLDEN_FILE
    if not path.exists() or inputs is None:
        return f"no golden predictions recorded ({GOLDEN_FILE}); retrain the model"
    expected = np.asarray(json.loads(path.read_text())["probabilities"], dtype=np.float64)
    got = golden_probabilities(predictor, inputs)
    if got.shape != expected.shape:
        return f"{len(got)} golden customers scored, {len(expected)} recorded"
    worst = float(np.max(np.abs(got - expected), initial=0.0))
    if not worst <= TOLERANCE:  # NaN is a mismatch too
        return f"golden prediction differs by {worst:.3g} (tolerance {TOLERANCE:g})"
    return None
