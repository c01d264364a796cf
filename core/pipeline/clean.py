"""Cleaning of the raw matrix: impute, cap outliers, blank out columns too sparse to trust.

`CustomerCleaner` learns its statistics on the training matrix only and replays them on
every later matrix (validation folds, serving requests), so a request is cleaned exactly
as the rows the model was trained on. Input and output are the raw float matrix of
`core.pipeline.encode` (columns = `RAW_COLUMNS`); the output keeps that layout.

All learned state is plain numpy arrays, so the model store can save it as JSON
(``.tolist()``) and restore it with ``setattr``. ``transform`` is two whole-matrix numpy
operations because it runs on the serving hot path for 1 to 1000 rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted, validate_data

from core.schema import COLUMN_KINDS, RAW_COLUMNS, ColumnKind


def _columns_of(kinds: Sequence[str], *wanted: ColumnKind) -> np.ndarray:
    """Boolean mask over the columns (of the given kinds) selecting the wanted kinds."""
    return np.array([ColumnKind(kind) in wanted for kind in kinds])


_RAW_KINDS = [COLUMN_KINDS[name].value for name in RAW_COLUMNS]
# Continuous columns are imputed with the median (robust to the outliers capped below);
# discrete ones with the most frequent code, so the fill is a valid value. Only amounts and
# counts are capped: codes and dates have no meaningful outliers.
_MEDIAN_KINDS = (ColumnKind.NUMBER, ColumnKind.DATE)
_MODE_KINDS = (ColumnKind.BOOLEAN, ColumnKind.CATEGORY)


def check_raw_matrix(X: object, n_features: int) -> np.ndarray:
    """Fast input check for `transform` on the serving hot path.

    sklearn's ``validate_data`` costs ~0.3 ms a call, more than the transform itself for a
    single request; this keeps what matters here (2-D float64, right width, no inf).
    """
    matrix = np.asarray(X, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != n_features:
        raise ValueError(f"expected a 2-D matrix with {n_features} columns, got {matrix.shape}")
    if np.isinf(matrix).any():
        raise ValueError("input contains inf; missing values must be NaN")
    return matrix


def _column_modes(values: np.ndarray) -> np.ndarray:
    """Most frequent non-NaN value of each column (ties → smallest value).

    Runs in `fit` only, over a handful of discrete columns, so a loop over columns is fine.
    """
    modes = np.full(values.shape[1], np.nan)
    for j in range(values.shape[1]):
        column = values[:, j]
        observed, counts = np.unique(column[~np.isnan(column)], return_counts=True)
        if observed.size:
            modes[j] = observed[np.argmax(counts)]
    return modes


class CustomerCleaner(TransformerMixin, BaseEstimator):
    """Median/mode imputation, IQR capping and sparse-column blanking on the raw matrix.

    Parameters
    ----------
    max_missing_fraction:
        A column missing in more than this fraction of training rows is treated as absent:
        it is all-NaN on output (XGBoost handles NaN natively) instead of being imputed
        from too few values. A column with no observed value at all is always absent.
    extra_kinds:
        Kinds (``"number"`` or ``"category"``) of the extra columns a data profile appends
        after `RAW_COLUMNS`; they are cleaned by the same rules.
    iqr_multiplier:
        ``k`` in the caps ``[Q1 - k·IQR, Q3 + k·IQR]`` applied to NUMBER columns
        (not to a column whose IQR is 0, which capping would flatten entirely).
    """

    def __init__(
        self,
        max_missing_fraction: float = 0.5,
        iqr_multiplier: float = 1.5,
        extra_kinds: Sequence[str] = (),
    ) -> None:
        self.max_missing_fraction = max_missing_fraction
        self.iqr_multiplier = iqr_multiplier
        self.extra_kinds = extra_kinds

    def __sklearn_tags__(self) -> Tags:
        """Declare NaN support: missing values are this transformer's whole job."""
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def fit(self, X: np.ndarray, y: object = None) -> CustomerCleaner:
        """Learn missing fractions, fill values and caps from the training matrix."""
        if not 0.0 <= self.max_missing_fraction <= 1.0:
            raise ValueError(
                f"max_missing_fraction must be in [0, 1], got {self.max_missing_fraction!r}"
            )
        if not self.iqr_multiplier >= 0.0:
            raise ValueError(f"iqr_multiplier must be >= 0, got {self.iqr_multiplier!r}")
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan")
        kinds = [*_RAW_KINDS, *self.extra_kinds]
        if X.shape[1] != len(kinds):
            raise ValueError(f"expected {len(kinds)} raw columns, got {X.shape[1]}")

        missing = np.isnan(X)
        self.missing_fraction_ = missing.mean(axis=0)
        self.dropped_ = (self.missing_fraction_ > self.max_missing_fraction) | missing.all(axis=0)
        kept = ~self.dropped_

        fill = np.full(X.shape[1], np.nan)
        median_cols = kept & _columns_of(kinds, *_MEDIAN_KINDS)
        if median_cols.any():
            fill[median_cols] = np.nanmedian(X[:, median_cols], axis=0)
        mode_cols = kept & _columns_of(kinds, *_MODE_KINDS)
        fill[mode_cols] = _column_modes(X[:, mode_cols])
        self.fill_values_ = fill

        lower = np.full(X.shape[1], -np.inf)
        upper = np.full(X.shape[1], np.inf)
        capped = kept & _columns_of(kinds, ColumnKind.NUMBER)
        if capped.any():
            q1, q3 = np.nanquantile(X[:, capped], [0.25, 0.75], axis=0)
            spread = self.iqr_multiplier * (q3 - q1)
            # A column concentrated on one value (late payments: mostly 0) has no spread;
            # capping it would erase every other value, and with it the signal.
            has_spread = q3 > q1
            lower[capped] = np.where(has_spread, q1 - spread, -np.inf)
            upper[capped] = np.where(has_spread, q3 + spread, np.inf)
        self.lower_caps_ = lower
        self.upper_caps_ = upper
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Fill gaps, clip to the training caps, blank dropped columns; returns a new array."""
        check_is_fitted(self)
        X = check_raw_matrix(X, self.n_features_in_)
        # Attributes may come back from the model store as lists; asarray is free on arrays.
        dropped = np.asarray(self.dropped_, dtype=bool)
        fill = np.asarray(self.fill_values_, dtype=np.float64)
        # Dropped columns have a NaN fill value, so one `where` both imputes and blanks them.
        out = np.where(np.isnan(X) | dropped, fill, X)
        lower = np.asarray(self.lower_caps_, dtype=np.float64)
        upper = np.asarray(self.upper_caps_, dtype=np.float64)
        return np.clip(out, lower, upper, out=out)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """The raw column names: cleaning keeps the matrix layout unchanged."""
        check_is_fitted(self)
        extras = [f"extra_{i}" for i in range(len(self.extra_kinds))]
        return np.asarray([*RAW_COLUMNS, *extras], dtype=object)
