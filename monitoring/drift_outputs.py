"""What a drift run leaves behind: Evidently's HTML report, a JSON summary, `drift_results`
rows, retraining triggers, and the short table `churn drift` prints."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, insert

from core.settings import Settings
from monitoring.database import DRIFT_RESULTS
from monitoring.psi import register_reference_psi
from monitoring.triggers import record_trigger

if TYPE_CHECKING:
    from rich.table import Table

    from monitoring.drift import ComparisonFrames, DriftRun, VersionDrift

SUMMARY_FILE = "drift_summary.json"
TABLE_ROWS = 12


def new_run_id() -> str:
    """A run's id: sortable by time, unique across hosts."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + os.urandom(4).hex()


def report_path(out: Path, version: str) -> Path:
    """`drift_report_<version>.html` (characters unsafe in a file name replaced)."""
    return out / f"drift_report_{re.sub(r'[^A-Za-z0-9_.-]', '_', version)}.html"


def _report_frames(
    frames: dict[str, ComparisonFrames], rows: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One reference and one current frame over every kind's columns. Parts of unequal
    length are padded with NaN, which Evidently leaves out of a column's distribution; the
    current frame is a random sample of at most `rows` rows."""
    reference = pd.concat([f.reference.reset_index(drop=True) for f in frames.values()], axis=1)
    current = pd.concat([f.current.reset_index(drop=True) for f in frames.values()], axis=1)
    if len(current) > rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(current), rows, replace=False))
        current = current.iloc[keep].reset_index(drop=True)
    return reference, current


def evidently_report(
    result: VersionDrift, frames: dict[str, ComparisonFrames], out: Path, settings: Settings
) -> None:
    """Evidently's report (`ValueDrift` per column, our reference-binned PSI as its stat
    test) on a sample of the window; its figures go into `result`, its HTML into `out`."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    if not frames:
        return
    method = register_reference_psi()
    reference, current = _report_frames(frames, settings.drift_report_rows, seed=0)
    kinds = {name: kind for part in frames.values() for name, kind in part.kinds.items()}
    usable = [n for n in kinds if reference[n].notna().any() and current[n].notna().any()]
    definition = DataDefinition(
        numerical_columns=[n for n in usable if kinds[n] == "numeric"],
        categorical_columns=[n for n in usable if kinds[n] == "categorical"],
    )
    metrics = [
        ValueDrift(column=n, method=method, threshold=settings.drift_moderate_psi) for n in usable
    ]
    snapshot = Report(metrics).run(
        Dataset.from_pandas(current[usable], data_definition=definition),
        Dataset.from_pandas(reference[usable], data_definition=definition),
    )
    figures = {m["config"]["column"]: float(m["value"]) for m in snapshot.dict()["metrics"]}
    result.columns = [replace(c, evidently_psi=figures.get(c.column)) for c in result.columns]
    out.mkdir(parents=True, exist_ok=True)
    result.report_rows = len(current)
    result.report_path = report_path(out, result.model_version)
    snapshot.save_html(str(result.report_path))


def record_run(engine: Engine, run: DriftRun, now: datetime | None = None) -> None:
    """One `drift_results` row per column and version; a retraining trigger for each
    version with a significant column (its columns and figures)."""
    created = now or datetime.now(UTC)
    rows = [
        {
            "run_id": run.run_id,
            "model_version": version.model_version,
            "kind": column.kind,
            "column": column.column,
            "psi": column.psi,
            "band": column.band,
            "reference_rows": column.reference_rows,
            "current_rows": column.current_rows,
            "window_start": run.window_start,
            "window_end": run.window_end,
            "created_at": created,
        }
        for version in run.versions
        for column in version.columns
        if math.isfinite(column.psi)  # a column with no value on a side has no PSI
    ]
    if rows:
        with engine.begin() as connection:
            connection.execute(insert(DRIFT_RESULTS), rows)
    for version in run.versions:
        significant = version.significant
        if significant:
            figures: dict[str, Any] = {
                "run_id": run.run_id,
                "rows": version.rows,
                "psi": {c.column: round(c.psi, 6) for c in significant},
                "kinds": {c.column: c.kind for c in significant},
            }
            names = [c.column for c in significant]
            version.trigger_id = record_trigger(
                engine, "drift", version.model_version, names, figures, created
            )


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def summary(run: DriftRun) -> dict[str, Any]:
    """The run as JSON-ready data (what `drift_summary.json` holds)."""
    return {
        "run_id": run.run_id,
        "window_start": run.window_start.isoformat(),
        "window_end": run.window_end.isoformat(),
        "seconds": {k: round(v, 3) for k, v in run.seconds.items()},
        "versions": [
            {
                "model_version": v.model_version,
                "rows": v.rows,
                "problem": v.problem,
                "missing_reference": v.missing_reference,
                "report": str(v.report_path) if v.report_path else None,
                "report_rows": v.report_rows,
                "trigger_id": v.trigger_id,
                "significant": [c.column for c in v.significant],
                "columns": [
                    {**vars(c), "psi": _finite(c.psi), "evidently_psi": _finite(c.evidently_psi)}
                    for c in v.columns
                ],
            }
            for v in run.versions
        ],
    }


def write_summary(run: DriftRun, out: Path) -> Path:
    """Write `drift_summary.json` into `out`; its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / SUMMARY_FILE
    path.write_text(json.dumps(summary(run), indent=2))
    return path


def drift_table(run: DriftRun, rows: int = TABLE_ROWS) -> Table:
    """The terminal view: per version, the columns with the highest PSI."""
    from rich.table import Table

    table = Table(
        title=f"Drift {run.window_start:%Y-%m-%d %H:%M} → {run.window_end:%Y-%m-%d %H:%M} UTC"
    )
    for name in ("model", "kind", "column", "PSI", "band"):
        table.add_column(name, justify="right" if name == "PSI" else "left")
    colours = {"none": "green", "moderate": "yellow", "significant": "bold red"}
    for version in run.versions:
        label = f"{version.model_version} ({version.rows:,} rows)"
        if version.problem:
            table.add_row(label, "", version.problem, "", "")
            continue
        ranked = sorted(version.columns, key=lambda c: -c.psi if math.isfinite(c.psi) else 0.0)
        for column in ranked[:rows]:
            shown = f"{column.psi:.3f}" if math.isfinite(column.psi) else "no values"
            band = f"[{colours[column.band]}]{column.band}[/]"
            table.add_row(label, column.kind, column.column, shown, band)
            label = ""
        if version.missing_reference:
            table.add_row(
                "", "", f"reference lacks: {', '.join(version.missing_reference)}", "", ""
            )
    return table
