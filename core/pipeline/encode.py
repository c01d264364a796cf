"""Raw encoding: customers (requests or table rows) → one float matrix.

Everything downstream (cleaner, feature transformer, model) works on this matrix, whose
columns are `RAW_COLUMNS` in order: numbers as floats, booleans as 0/1, categories as
their index in the schema's vocabulary, dates as days since 1970-01-01; missing is NaN.
Training (a DataFrame) and serving (a list of validated requests) meet here, so they
cannot drift apart. Each column is converted in one vectorised numpy step; the only
per-row work is the attribute gather that any batch of objects needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from operator import attrgetter

import numpy as np
import pandas as pd

from core.pipeline.extras import (
    ExtraColumn,
    encode_extra_frame,
    encode_extra_values,
    objects_or_none,
)
from core.schema import CATEGORIES, COLUMN_KINDS, RAW_COLUMNS, ColumnKind, CustomerData

RAW_INDEX: dict[str, int] = {name: i for i, name in enumerate(RAW_COLUMNS)}
"""Column position of each raw field in the encoded matrix."""

_gather = attrgetter(*RAW_COLUMNS)


_NUMERIC_IDX = [
    i
    for i, n in enumerate(RAW_COLUMNS)
    if COLUMN_KINDS[n] in (ColumnKind.NUMBER, ColumnKind.BOOLEAN)
]
_DATE_IDX = [i for i, n in enumerate(RAW_COLUMNS) if COLUMN_KINDS[n] is ColumnKind.DATE]
_CATEGORY_IDX = [(RAW_INDEX[n], vocabulary) for n, vocabulary in CATEGORIES.items()]
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _days_since_epoch(value: object) -> float:
    if not isinstance(value, date):
        return np.nan
    return float(value.toordinal() - _EPOCH_ORDINAL)


def _encode_columns(columns: Sequence[Sequence[object] | np.ndarray], n_rows: int) -> np.ndarray:
    """Encode raw columns in `RAW_COLUMNS` order (``None`` = missing) into float64.

    Numbers and booleans convert as one block (numpy turns ``None`` into NaN), each
    category column by one comparison per vocabulary entry.
    """
    out = np.empty((n_rows, len(RAW_COLUMNS)), dtype=np.float64)
    if n_rows == 0:
        return out
    out[:, _NUMERIC_IDX] = np.array([columns[i] for i in _NUMERIC_IDX], dtype=np.float64).T
    for j in _DATE_IDX:
        out[:, j] = np.fromiter(map(_days_since_epoch, columns[j]), np.float64, n_rows)
    for j, vocabulary in _CATEGORY_IDX:
        values = np.asarray(columns[j], dtype=object)
        codes = np.full(n_rows, np.nan)
        for code, category in enumerate(vocabulary):
            codes[values == category] = code
        out[:, j] = codes
    return out


def encode_customers(
    customers: Sequence[CustomerData], extras: Sequence[ExtraColumn] = ()
) -> np.ndarray:
    """Validated requests → raw matrix: `RAW_COLUMNS`, then the model's extra columns."""
    columns = list(zip(*map(_gather, customers), strict=True))
    raw = _encode_columns(columns, len(customers))
    if not extras:
        return raw
    return np.hstack([raw, encode_extra_values([c.extra for c in customers], extras)])


def encode_frame(frame: pd.DataFrame, extras: Sequence[ExtraColumn] = ()) -> np.ndarray:
    """A typed customer table → raw matrix; absent optional columns become NaN."""
    missing: list[object] = [None] * len(frame)
    columns: list[Sequence[object] | np.ndarray] = []
    for name in RAW_COLUMNS:
        if name not in frame.columns:
            columns.append(missing)
            continue
        column = frame[name]
        if COLUMN_KINDS[name] is ColumnKind.DATE:
            column = pd.to_datetime(column, errors="coerce")
        columns.append(objects_or_none(column))
    raw = _encode_columns(columns, len(frame))
    return np.hstack([raw, encode_extra_frame(frame, extras)]) if extras else raw
