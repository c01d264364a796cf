"""`churn drift`: the window's logged traffic against the reference stored with its model.

For each model version that served rows in the window: its stored transformer rebuilds the
25 engineered features from the logged raw inputs, and three kinds of column are compared
with the model's reference (core/pipeline/store.py `load_reference`):

- ``feature``: the engineered features, against the training rows' features;
- ``input``: the raw inputs (numbers, flags, dates as days, categories), against the same
  training rows' raw inputs;
- ``prediction``: the served churn probability, against held-out probabilities.

The alert PSI (monitoring/psi.py, bins fixed from the reference) is computed over every
row; Evidently's report runs the same registered stat test on a sample of the window
(``drift_report_rows``, 50,000 by default) for the HTML. Outputs (monitoring/drift_outputs.py):
the HTML, a JSON summary, `drift_results` rows and a retraining trigger when any column is
significant. A part of the reference an older model lacks is reported, not fatal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from core.pipeline.encode import encode_frame
from core.pipeline.features import ENGINEERED_FEATURES
from core.pipeline.store import StoredPredictor, StoredReference, load_predictor, load_reference
from core.schema import CATEGORIES, RAW_COLUMNS
from core.settings import MODEL_NAME, Settings, get_settings
from monitoring.drift_window import VersionRows, read_window
from monitoring.psi import Band, ColumnKind, band, column_psi
from monitoring.windows import resolve_version

PREDICTION_COLUMN = "churn_probability"


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift for one model version."""

    kind: str  # feature | input | prediction
    column: str
    psi: float
    band: Band
    reference_rows: int
    current_rows: int
    missing_reference: float
    missing_current: float
    evidently_psi: float | None = None
    """Evidently's figure for the column, on the report's sample (None: not in the report)."""


@dataclass
class VersionDrift:
    """The drift of the rows one model version served in the window."""

    model_version: str
    rows: int
    columns: list[ColumnDrift] = field(default_factory=list)
    missing_reference: list[str] = field(default_factory=list)
    """Parts of the reference the stored model lacks (older models): those kinds are skipped."""
    problem: str | None = None
    """Why nothing was compared (the model is no longer in the store), or None."""
    report_rows: int = 0
    """Rows of the window Evidently's report was computed on (a sample if fewer than `rows`)."""
    report_path: Path | None = None
    trigger_id: int | None = None

    @property
    def significant(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.band == "significant"]


@dataclass
class DriftRun:
    """One `churn drift` run: every version's results over one window."""

    run_id: str
    window_start: datetime
    window_end: datetime
    versions: list[VersionDrift]
    summary_path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)


# --- Comparison frames --------------------------------------------------------------------


def input_frame(
    raw: np.ndarray, stored: StoredPredictor
) -> tuple[pd.DataFrame, dict[str, ColumnKind]]:
    """Raw matrix (schema columns, then the model's extras) → one column per raw input:
    numbers, flags (0/1) and dates (days) numeric; categories as their labels."""
    columns: dict[str, Any] = {}
    kinds: dict[str, ColumnKind] = {}
    names = [*RAW_COLUMNS, *(c.name for c in stored.predictor.extras)]
    vocabularies = {**CATEGORIES}
    vocabularies.update(
        {c.name: c.categories for c in stored.predictor.extras if c.kind == "category"}
    )
    for j, name in enumerate(names):
        values = raw[:, j]
        if name in vocabularies:
            labels = np.asarray([*vocabularies[name], None], dtype=object)
            codes = np.where(np.isnan(values), len(labels) - 1, values).astype(np.intp)
            columns[name], kinds[name] = labels[codes], "categorical"
        else:
            columns[name], kinds[name] = values, "numeric"
    return pd.DataFrame(columns), kinds


def _features(stored: StoredPredictor, raw: np.ndarray) -> pd.DataFrame:
    names = list(stored.predictor.feature_names)
    frame = pd.DataFrame(stored.predictor.transform(raw), columns=names)
    return frame[[n for n in ENGINEERED_FEATURES if n in frame.columns]]


@dataclass
class ComparisonFrames:
    """Reference and current columns of one kind, with each column's kind of values."""

    reference: pd.DataFrame
    current: pd.DataFrame
    kinds: dict[str, ColumnKind]


def comparison_frames(
    stored: StoredPredictor, reference: StoredReference, rows: VersionRows
) -> dict[str, ComparisonFrames]:
    """Per kind (feature, input, prediction): the frames to compare; a kind whose reference
    part the model lacks is absent."""
    raw = rows.raw_with_extras(stored.predictor.extras)
    frames: dict[str, ComparisonFrames] = {}
    if reference.features is not None:
        current = _features(stored, raw)
        names = [n for n in current.columns if n in reference.features.columns]
        kinds: dict[str, ColumnKind] = dict.fromkeys(names, "numeric")
        frames["feature"] = ComparisonFrames(reference.features[names], current[names], kinds)
    if reference.inputs is not None:
        current, kinds = input_frame(raw, stored)
        ref_raw = encode_frame(reference.inputs, stored.predictor.extras)
        ref, _ = input_frame(ref_raw, stored)
        frames["input"] = ComparisonFrames(ref, current, kinds)
    if reference.predictions is not None:
        frames["prediction"] = ComparisonFrames(
            pd.DataFrame({PREDICTION_COLUMN: reference.predictions}),
            pd.DataFrame({PREDICTION_COLUMN: rows.probabilities}),
            {PREDICTION_COLUMN: "numeric"},
        )
    return frames


def column_drifts(frames: dict[str, ComparisonFrames], settings: Settings) -> list[ColumnDrift]:
    """The alert PSI of every column, over every row, banded by the settings."""
    results = []
    for kind, part in frames.items():
        for name, value_kind in part.kinds.items():
            if part.reference[name].isna().all() and part.current[name].isna().all():
                continue  # an input neither training nor traffic had (a profile without it)
            figure = column_psi(
                part.reference[name].to_numpy(), part.current[name].to_numpy(), value_kind
            )
            results.append(
                ColumnDrift(
                    kind=kind,
                    column=name,
                    psi=figure.psi,
                    band=band(
                        figure.psi, settings.drift_moderate_psi, settings.drift_significant_psi
                    ),
                    reference_rows=figure.reference_rows,
                    current_rows=figure.current_rows,
                    missing_reference=figure.missing_reference,
                    missing_current=figure.missing_current,
                )
            )
    return results


# --- The job ------------------------------------------------------------------------------


def _stored_model(version: str) -> StoredPredictor:
    return load_predictor(version if ":" in version else f"{MODEL_NAME}:{version}")


def run_drift(
    engine: Engine,
    window: timedelta = timedelta(days=7),
    *,
    model: str | None = None,
    out: Path | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
    progress: bool = True,
    record: bool = True,
) -> DriftRun:
    """Compare the window ending `now` with each serving model's reference; write the HTML
    and JSON into `out`, `drift_results` rows and triggers (unless `record` is False)."""
    from monitoring.drift_outputs import evidently_report, new_run_id, record_run, write_summary

    settings = settings or get_settings()
    end = now or datetime.now(UTC)
    run = DriftRun(new_run_id(), end - window, end, [])
    started = time.perf_counter()
    version = resolve_version(model) if model else None
    windows = read_window(engine, run.window_start, end, version, progress=progress)
    run.seconds["read"] = time.perf_counter() - started
    for name, rows in sorted(windows.items()):
        mark = time.perf_counter()
        result = VersionDrift(name, len(rows))
        run.versions.append(result)
        try:
            stored = _stored_model(name)
        except Exception as error:  # bentoml's NotFound, or a model failing its checksums
            result.problem = f"model {name} cannot be loaded: {error}"
            continue
        reference = load_reference(stored.path)
        result.missing_reference = reference.missing()
        frames = comparison_frames(stored, reference, rows)
        run.seconds["features"] = run.seconds.get("features", 0.0) + time.perf_counter() - mark
        mark = time.perf_counter()
        result.columns = column_drifts(frames, settings)
        run.seconds["psi"] = run.seconds.get("psi", 0.0) + time.perf_counter() - mark
        if out is not None:
            mark = time.perf_counter()
            evidently_report(result, frames, out, settings)
            run.seconds["report"] = run.seconds.get("report", 0.0) + time.perf_counter() - mark
    mark = time.perf_counter()
    if record:
        record_run(engine, run)
    if out is not None:
        run.summary_path = write_summary(run, out)
    run.seconds["record"] = time.perf_counter() - mark
    run.seconds["total"] = time.perf_counter() - started
    return run
