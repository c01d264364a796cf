"""`churn score`: a customer table → id, churn_probability, will_churn, risk_level.

Each partition goes through exactly what `/predict` applies to a request: the table rules
of `CustomerData` (`training.data.validate_table`, the schema's field constraints), the
shared raw encoding (`encode_frame`), the stored cleaner and feature transformer, the
booster (and linear blend) and the calibration (`ChurnPredictor.predict_proba`), then the
decision and risk bands of `core.risk`. So a customer scored in batch gets the
probability the service answers for it. The predictor travels to each worker once (a
delayed value the tasks share), not once per partition.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import pandas as pd

from batch.cluster import Engine, compute, dask_client
from batch.tables import DEFAULT_BLOCKSIZE, read_table, validated, write_table
from core.pipeline.encode import encode_frame
from core.pipeline.predictor import ChurnPredictor
from core.pipeline.store import (
    PROBABILITY_COLUMN,
    StoredPredictor,
    load_predictor,
    stored_predictor,
)
from core.risk import RISK_LEVELS, levels_in_bands, risk_bands, will_churn
from core.schema import ID_COLUMN
from core.settings import MODEL_NAME, get_settings

OUTPUT_META = pd.DataFrame(
    {
        ID_COLUMN: pd.Series(dtype=object),
        PROBABILITY_COLUMN: pd.Series(dtype=np.float64),
        "will_churn": pd.Series(dtype=bool),
        "risk_level": pd.Series(dtype=object),
    }
)
"""The output's columns and types."""


def score_partition(
    part: pd.DataFrame,
    predictor: ChurnPredictor,
    bands: tuple[float, float],
    partition_info: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """One partition scored as the service scores it (module docstring)."""
    typed = validated(part, partition_info, require_target=False, extras=predictor.extras)
    probability = predictor.predict_proba(encode_frame(typed, predictor.extras))
    return pd.DataFrame(
        {
            ID_COLUMN: typed[ID_COLUMN].to_numpy(dtype=object),
            PROBABILITY_COLUMN: probability,
            "will_churn": will_churn(probability, predictor.threshold),
            "risk_level": np.array(RISK_LEVELS, dtype=object)[levels_in_bands(probability, bands)],
        }
    )


@dataclass(frozen=True)
class ScoreRun:
    """What a `churn score` run did."""

    rows: int
    partitions: int
    seconds: float
    model_version: str

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("nan")


def scored_frame(source: str, predictor: ChurnPredictor, blocksize: int) -> Any:
    """The lazy scored table (a Dask DataFrame of `OUTPUT_META`'s columns)."""
    frame = read_table(source, blocksize)
    bands = risk_bands(predictor.threshold, get_settings())
    shared = dask.delayed(predictor, pure=True)
    return frame.map_partitions(score_partition, shared, bands, meta=OUTPUT_META)


def scoring_model(model: str | None) -> StoredPredictor:
    """The model a batch is scored with: `model` (a stored tag) when given, else what
    `/predict` answers with — the registry's champion (fetched and verified) when the
    service follows the registry (`CHURN_MODEL_SOURCE=registry`) and it has one, the
    store's latest otherwise."""
    if model is not None:
        return load_predictor(model)
    if get_settings().model_source == "registry":
        from core.registry import ModelRegistry

        registry = ModelRegistry()
        champion = registry.assignment().champion
        if champion is not None:
            tag = registry.bentoml_tag(champion)
            return stored_predictor(registry.fetch(champion), tag.split(":", 1)[1])
    return load_predictor(f"{MODEL_NAME}:latest")


def score_table(
    source: str,
    target: str,
    engine: Engine = "local",
    scheduler: str | None = None,
    model: str | None = None,
    blocksize: int = DEFAULT_BLOCKSIZE,
    progress: bool = True,
) -> ScoreRun:
    """Score the table at `source` into `target` with `model` (default: the champion, see
    `scoring_model`), in this process (`local`) or on a Dask cluster (`dask`)."""
    stored = scoring_model(model)
    scored = scored_frame(source, stored.predictor, blocksize)
    lazy = write_table(scored, target, scored.map_partitions(len).sum())
    started = time.perf_counter()
    if engine == "local":
        _, rows = compute(lazy, None, progress)
    else:
        with dask_client(scheduler) as client:
            _, rows = compute(lazy, client, progress)
    seconds = time.perf_counter() - started
    return ScoreRun(int(rows), scored.npartitions, seconds, stored.version)
