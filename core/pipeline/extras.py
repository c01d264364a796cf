"""Extra columns: signals a user's table carries that the canonical schema has no place for.

A data profile names them; training learns their categories; the model stores the
resulting `ExtraColumn` specs; requests send them in an ``extra`` object, checked here
against what the model was trained with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

ExtraKind = Literal["number", "category"]


@dataclass(frozen=True)
class ExtraColumn:
    """One extra model input: its name, kind, and (for categories) the known values."""

    name: str
    kind: ExtraKind
    categories: tuple[str, ...] = ()
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "categories": list(self.categories)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExtraColumn:
        return cls(
            name=str(data["name"]),
            kind=data["kind"],
            categories=tuple(data.get("categories", ())),
            required=bool(data.get("required", True)),
        )


def feature_name(name: str) -> str:
    """The model feature an extra column becomes."""
    return f"extra_{name}"


def learn_categories(columns: Sequence[ExtraColumn], frame: pd.DataFrame) -> list[ExtraColumn]:
    """Fill in each categorical extra's vocabulary from the training table."""
    learned = []
    for column in columns:
        if column.kind == "category":
            seen = frame[column.name].dropna().astype(str).unique()
            column = ExtraColumn(column.name, column.kind, tuple(sorted(seen)), column.required)
        learned.append(column)
    return learned


def _encode(column: ExtraColumn, values: np.ndarray) -> np.ndarray:
    """Object array (None = missing) → float64: numbers as is, categories as codes."""
    if column.kind == "number":
        return np.array(values, dtype=np.float64)
    codes = np.full(values.shape[0], np.nan)
    for code, category in enumerate(column.categories):
        codes[values == category] = code
    return codes


def objects_or_none(series: pd.Series) -> np.ndarray:
    """A column as Python objects with every missing value (NaN, NaT, pd.NA) as None:
    the one spelling of "missing" the row encoders check for."""
    values = series.to_numpy(dtype=object)
    values[series.isna().to_numpy()] = None
    return values


def encode_extra_frame(frame: pd.DataFrame, columns: Sequence[ExtraColumn]) -> np.ndarray:
    """Extra columns of a typed training table → float matrix (n, len(columns))."""
    out = np.full((len(frame), len(columns)), np.nan)
    for j, column in enumerate(columns):
        if column.name in frame.columns:
            series = frame[column.name]
            if column.kind == "category":
                series = series.astype("string")
            values = objects_or_none(series)
            out[:, j] = _encode(column, values)
    return out


def encode_extra_values(
    extras: Sequence[Mapping[str, Any] | None], columns: Sequence[ExtraColumn]
) -> np.ndarray:
    """The ``extra`` objects of a batch of requests → float matrix (n, len(columns))."""
    out = np.empty((len(extras), len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        values = np.array([(e or {}).get(column.name) for e in extras], dtype=object)
        out[:, j] = _encode(column, values)
    return out


def extra_problems(
    extra: Mapping[str, Any] | None, columns: Sequence[ExtraColumn]
) -> list[dict[str, str]]:
    """Why a request's ``extra`` object does not fit the model (empty when it does)."""
    extra = extra or {}
    known = {c.name for c in columns}
    problems = [
        {"field": f"extra.{name}", "rule": "extra_forbidden", "message": "not a model input"}
        for name in extra
        if name not in known
    ]
    for column in columns:
        value = extra.get(column.name)
        field = f"extra.{column.name}"
        if value is None:
            if column.required:
                problems.append({"field": field, "rule": "missing", "message": "Field required"})
        elif column.kind == "number" and (
            isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value)
        ):
            problems.append(
                {"field": field, "rule": "finite_number", "message": "must be a finite number"}
            )
        elif column.kind == "category" and str(value) not in column.categories:
            allowed = ", ".join(repr(c) for c in column.categories)
            problems.append(
                {"field": field, "rule": "literal_error", "message": f"must be one of {allowed}"}
            )
    return problems
