"""A window of the prediction log read back for drift checks, fast enough for 1,000,000 rows.

The `features` column holds each request's raw fields as JSON. It is selected as text
(``features::text`` on PostgreSQL: the server's JSONB-to-text is cheap, psycopg's per-row
JSON parsing through the `json` module is not) and parsed with orjson, in chunks streamed
through a server-side cursor, each chunk encoded at once into the raw float matrix the
pipeline reads (`core.pipeline.encode`), so no million Python dicts are ever held.
Rows stay attributed to the model version that served them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import orjson
import pandas as pd
from sqlalchemy import ColumnElement, Engine, Text, cast, func, select
from tqdm.auto import tqdm

from core.pipeline.encode import encode_frame
from core.pipeline.extras import ExtraColumn, encode_extra_frame
from core.schema import EXTRA_FIELD, RAW_COLUMNS
from monitoring.database import PREDICTIONS

CHUNK_ROWS = 50_000


@dataclass
class VersionRows:
    """The window's rows served by one model version: raw inputs and served probabilities."""

    raw: np.ndarray
    """Encoded raw inputs, columns `RAW_COLUMNS` (core/pipeline/encode.py)."""
    probabilities: np.ndarray
    extras: list[dict[str, object] | None] = field(default_factory=list)
    """Each row's ``extra`` object (a data profile's extra columns), if any row had one."""

    def __len__(self) -> int:
        return len(self.probabilities)

    def raw_with_extras(self, columns: tuple[ExtraColumn, ...]) -> np.ndarray:
        """The raw matrix the model with these extra columns reads."""
        if not columns:
            return self.raw
        values = self.extras or [None] * len(self)
        frame = pd.DataFrame([v or {} for v in values], columns=[c.name for c in columns])
        return np.hstack([self.raw, encode_extra_frame(frame, columns)])


@dataclass
class _Parts:
    raw: list[np.ndarray] = field(default_factory=list)
    probabilities: list[np.ndarray] = field(default_factory=list)
    extras: list[dict[str, object] | None] = field(default_factory=list)
    has_extras: bool = False

    def rows(self) -> VersionRows:
        raw = np.vstack(self.raw) if self.raw else np.empty((0, len(RAW_COLUMNS)))
        probabilities = np.concatenate(self.probabilities) if self.probabilities else np.empty(0)
        return VersionRows(raw, probabilities, self.extras if self.has_extras else [])


def _window_filter(
    start: datetime, end: datetime, version: str | None
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [
        PREDICTIONS.c.created_at >= start,
        PREDICTIONS.c.created_at < end,
    ]
    if version is not None:
        where.append(PREDICTIONS.c.model_version == version)
    return where


def count_window(engine: Engine, start: datetime, end: datetime, version: str | None = None) -> int:
    """Rows logged in [start, end) (by one model version, if given)."""
    query = (
        select(func.count()).select_from(PREDICTIONS).where(*_window_filter(start, end, version))
    )
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def _chunks(
    engine: Engine, start: datetime, end: datetime, version: str | None, chunk_rows: int
) -> Iterator[list[tuple[str, float, str]]]:
    query = select(
        PREDICTIONS.c.model_version,
        PREDICTIONS.c.churn_probability,
        cast(PREDICTIONS.c.features, Text),
    ).where(*_window_filter(start, end, version))
    with engine.connect() as connection:
        streamed = connection.execution_options(stream_results=True, yield_per=chunk_rows)
        for partition in streamed.execute(query).partitions():
            yield [tuple(row) for row in partition]  # type: ignore[misc]


def encode_logged(documents: list[dict[str, object]]) -> np.ndarray:
    """Logged feature objects → raw matrix (`RAW_COLUMNS`); absent fields are missing."""
    columns = {name: [d.get(name) for d in documents] for name in RAW_COLUMNS}
    return encode_frame(pd.DataFrame(columns, dtype=object))


def read_window(
    engine: Engine,
    start: datetime,
    end: datetime,
    version: str | None = None,
    *,
    chunk_rows: int = CHUNK_ROWS,
    progress: bool = True,
) -> dict[str, VersionRows]:
    """The window's logged rows, by the model version that served them."""
    total = count_window(engine, start, end, version)
    parts: dict[str, _Parts] = {}
    with tqdm(
        total=total, desc="reading the prediction log", unit="rows", disable=not progress
    ) as bar:
        for chunk in _chunks(engine, start, end, version, chunk_rows):
            versions = np.array([row[0] for row in chunk], dtype=object)
            probabilities = np.fromiter((row[1] for row in chunk), np.float64, len(chunk))
            documents = [orjson.loads(row[2]) for row in chunk]
            raw = encode_logged(documents)
            extras = [d.get(EXTRA_FIELD) for d in documents]
            for name in pd.unique(versions):
                mask = versions == name
                part = parts.setdefault(str(name), _Parts())
                part.raw.append(raw[mask])
                part.probabilities.append(probabilities[mask])
                chosen = [e for e, keep in zip(extras, mask, strict=True) if keep]
                part.extras.extend(chosen)  # type: ignore[arg-type]
                part.has_extras = part.has_extras or any(e for e in chosen)
            bar.update(len(chunk))
    return {name: part.rows() for name, part in parts.items()}
