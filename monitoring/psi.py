"""Population Stability Index with bins fixed by the reference: the figure drift alerts use.

PSI = Σ (a − e) · ln(a / e) over bins, `e` the reference share and `a` the current share of
a bin (the design's formula); an empty bin counts as ``EMPTY_SHARE`` so the log is finite.

Why not Evidently's own binning: its PSI spans Sturges bins over the *combined* reference
and current range, so one extreme current value (1e6) stretches the bins until every
normal value shares one bin and a 1.5σ shift reads as no drift (measured: 0.34 → 0.03).
Here the bins come from the reference alone and never move:

- a numeric column with more than ``MAX_VALUE_BINS`` distinct reference values gets the
  reference's deciles as edges; a column with fewer gets one bin per reference value
  (edges half-way between neighbours). The outer bins are open, so a current value beyond
  the reference range is clipped into the edge bin: an outlier adds one row to a bin, it
  never reshapes the others;
- a categorical column gets one bin per category, reference or current (a category the
  reference never had is its own bin, at ``EMPTY_SHARE`` on the reference side);
- missing values are left out of the distribution (as Evidently does); the missing shares
  are reported beside the PSI instead (`ColumnPSI.missing_*`).

The same bins are registered as an Evidently stat test (``REFERENCE_PSI``), so Evidently's
report shows the figure the alerts use; `column_psi` is the vectorised numpy version over
every row of a window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

EMPTY_SHARE = 1e-4
"""Share given to a bin one side has no row in (Evidently uses the same 0.0001)."""
DECILES = 10
MAX_VALUE_BINS = 20
"""Up to this many distinct reference values, a numeric column is binned per value."""
REFERENCE_PSI = "reference_bins_psi"
"""Name of the registered Evidently stat test."""

Band = Literal["none", "moderate", "significant"]
ColumnKind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class Bins:
    """Fixed bins of one column: ascending edges (numeric) or categories (categorical)."""

    kind: ColumnKind
    edges: np.ndarray
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class ColumnPSI:
    """One column's PSI and what it was computed from."""

    psi: float
    reference_rows: int
    current_rows: int
    missing_reference: float
    missing_current: float


def band(psi: float, moderate: float, significant: float) -> Band:
    """The design's bands: < moderate none, < significant moderate, else significant."""
    if psi >= significant:
        return "significant"
    return "moderate" if psi >= moderate else "none"


def psi_from_shares(expected: np.ndarray, actual: np.ndarray) -> float:
    """Σ (a − e) · ln(a / e), empty bins at ``EMPTY_SHARE``."""
    e = np.where(expected > 0, expected, EMPTY_SHARE)
    a = np.where(actual > 0, actual, EMPTY_SHARE)
    return float(np.sum((a - e) * np.log(a / e)))


def _observed_numbers(values: np.ndarray | pd.Series) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


def _observed_labels(values: np.ndarray | pd.Series) -> np.ndarray:
    series = pd.Series(values, dtype=object)
    return series[series.notna()].astype(str).to_numpy()


def reference_bins(reference: np.ndarray | pd.Series, kind: ColumnKind) -> Bins:
    """The bins a reference column defines (see the module docstring)."""
    if kind == "categorical":
        return Bins(kind, np.empty(0), tuple(sorted(set(_observed_labels(reference)))))
    values = np.unique(_observed_numbers(reference))
    if values.size <= MAX_VALUE_BINS:
        return Bins(kind, (values[1:] + values[:-1]) / 2)
    quantiles = np.quantile(_observed_numbers(reference), np.linspace(0, 1, DECILES + 1)[1:-1])
    return Bins(kind, np.unique(quantiles))


def bin_counts(values: np.ndarray | pd.Series, bins: Bins) -> tuple[np.ndarray, tuple[str, ...]]:
    """Rows per bin (missing values left out). Categorical: counts per category, with
    categories the bins do not know appended in sorted order (returned too)."""
    if bins.kind == "numeric":
        observed = _observed_numbers(values)
        index = np.searchsorted(bins.edges, observed, side="right")  # open outer bins
        return np.bincount(index, minlength=bins.edges.size + 1), ()
    codes, uniques = pd.factorize(_observed_labels(values))
    per_unique = np.bincount(codes, minlength=len(uniques))
    known = {c: i for i, c in enumerate(bins.categories)}
    extra = tuple(sorted(set(uniques) - known.keys()))
    lookup = {**known, **{c: len(known) + i for i, c in enumerate(extra)}}
    counts = np.zeros(len(lookup), dtype=np.int64)
    np.add.at(counts, np.asarray([lookup[c] for c in uniques], dtype=np.intp), per_unique)
    return counts, extra


def _shares(counts: np.ndarray, size: int) -> np.ndarray:
    padded = np.zeros(size)
    padded[: counts.size] = counts
    total = padded.sum()
    return padded / total if total else padded


def psi_with_bins(
    bins: Bins, reference: np.ndarray | pd.Series, current: np.ndarray | pd.Series
) -> float:
    """PSI of `current` against `reference` over fixed `bins`; NaN if a side has no value."""
    ref_counts, _ = bin_counts(reference, bins)
    cur_counts, _ = bin_counts(current, bins)
    size = max(ref_counts.size, cur_counts.size)
    if ref_counts.sum() == 0 or cur_counts.sum() == 0:
        return float("nan")
    return psi_from_shares(_shares(ref_counts, size), _shares(cur_counts, size))


def _missing_share(values: np.ndarray | pd.Series, kind: ColumnKind) -> float:
    if len(values) == 0:
        return 0.0
    if kind == "numeric":
        return float(np.mean(~np.isfinite(np.asarray(values, dtype=np.float64))))
    return float(pd.Series(values, dtype=object).isna().mean())


def column_psi(
    reference: np.ndarray | pd.Series, current: np.ndarray | pd.Series, kind: ColumnKind
) -> ColumnPSI:
    """The alert PSI of one column over every row given, with row counts and missing shares."""
    bins = reference_bins(reference, kind)
    return ColumnPSI(
        psi=psi_with_bins(bins, reference, current),
        reference_rows=len(reference),
        current_rows=len(current),
        missing_reference=_missing_share(reference, kind),
        missing_current=_missing_share(current, kind),
    )


def frame_psi(
    reference: pd.DataFrame, current: pd.DataFrame, kinds: dict[str, ColumnKind]
) -> dict[str, ColumnPSI]:
    """`column_psi` of every column named in `kinds` (present in both frames)."""
    return {
        name: column_psi(reference[name].to_numpy(), current[name].to_numpy(), kind)
        for name, kind in kinds.items()
    }


def _evidently_psi(
    reference: pd.Series, current: pd.Series, feature_type: object, threshold: float
) -> tuple[float, bool]:
    """The registered stat test: Evidently hands it the column without missing values."""
    from evidently.legacy.core import ColumnType

    kind: ColumnKind = "categorical" if feature_type == ColumnType.Categorical else "numeric"
    value = psi_with_bins(reference_bins(reference, kind), reference, current)
    return value, bool(value >= threshold)


def register_reference_psi() -> str:
    """Register ``REFERENCE_PSI`` with Evidently (idempotent); its name, for
    ``ValueDrift(method=...)``."""
    from evidently.legacy.calculations.stattests.registry import (
        StatTest,
        _registered_stat_tests,
        register_stattest,
    )
    from evidently.legacy.core import ColumnType

    if REFERENCE_PSI not in _registered_stat_tests:
        test = StatTest(
            name=REFERENCE_PSI,
            display_name="PSI (bins fixed from the reference)",
            allowed_feature_types=[ColumnType.Categorical, ColumnType.Numerical],
            default_threshold=0.1,
        )
        register_stattest(test, _evidently_psi)
    return REFERENCE_PSI


def kinds_of(frame: pd.DataFrame, categorical: Sequence[str] = ()) -> dict[str, ColumnKind]:
    """Column kinds of a frame: the named ones (and text columns) categorical."""
    return {
        name: "categorical"
        if name in categorical or not pd.api.types.is_numeric_dtype(frame[name])
        else "numeric"
        for name in frame.columns
    }
