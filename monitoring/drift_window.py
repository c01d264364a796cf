"""A window of the prediction log read back for drift checks, fast enough for 1,000,000 rows.

The `features` column holds each request's raw fields as JSON. Two readers, one result:

- PostgreSQL: the server extracts the fields (``jsonb_to_record``, in its own process, so
  on two cores it works beside the parsing here) and COPYs them out as CSV; pandas' C
  reader parses the CSV in chunks. The CSV of the whole window is held in memory while
  it is parsed (about 135 bytes a row: 135 MB for 1,000,000 rows);
- SQLite (and anything else): the JSON text, streamed in chunks through the cursor and
  parsed with orjson.

Either way each chunk is encoded at once into the raw float matrix the pipeline reads
(`core.pipeline.encode`), so no million Python dicts are ever held, and rows stay
attributed to the model version that served them.
"""

from __future__ import annotations

import io
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import orjson
import pandas as pd
from sqlalchemy import ColumnElement, Engine, Text, cast, func, select
from tqdm.auto import tqdm

from core.pipeline.encode import encode_frame
from core.pipeline.extras import ExtraColumn, encode_extra_frame
from core.schema import COLUMN_KINDS, EXTRA_FIELD, RAW_COLUMNS, ColumnKind
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


# --- PostgreSQL: fields extracted by the server, COPYed out as CSV -----------------------

_PG_TYPES = {
    ColumnKind.NUMBER: "float8",
    ColumnKind.BOOLEAN: "boolean",
    ColumnKind.DATE: "text",
    ColumnKind.CATEGORY: "text",
}
Chunk = tuple[np.ndarray, np.ndarray, list[dict[str, object] | None], np.ndarray]
"""Versions, probabilities, `extra` objects and the encoded raw matrix of some rows."""


def _pg_copy_statement(version: str | None) -> str:
    """COPY of the window's rows, one CSV column per raw field: `jsonb_to_record` runs in
    the server process, in parallel with the parsing here, and pandas' C reader parses
    the CSV (faster than fetching JSON text and parsing it row by row: BENCHMARKS.md)."""
    record = ", ".join(f"{name} {_PG_TYPES[COLUMN_KINDS[name]]}" for name in RAW_COLUMNS)
    fields = ", ".join(f"r.{name}" for name in RAW_COLUMNS)
    only = " AND p.model_version = %(version)s" if version is not None else ""
    return (
        f"COPY (SELECT p.model_version, p.churn_probability, p.features->'{EXTRA_FIELD}', "
        f"{fields} FROM predictions p, jsonb_to_record(p.features) AS r({record}) "
        f"WHERE p.created_at >= %(start)s AND p.created_at < %(end)s{only}) "
        "TO STDOUT WITH (FORMAT csv)"
    )


def _pg_csv(
    engine: Engine, start: datetime, end: datetime, version: str | None, bar: tqdm
) -> bytes:
    """The window's rows as one CSV document, read in COPY blocks."""
    blocks = []
    params = {"start": start, "end": end, "version": version}
    with engine.connect() as connection:
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(_pg_copy_statement(version), params) as copy:
            for view in copy:
                block = bytes(view)
                blocks.append(block)
                bar.update(block.count(b"\n"))
    return b"".join(blocks)


def _read_postgres(
    engine: Engine, start: datetime, end: datetime, version: str | None, chunk_rows: int, bar: tqdm
) -> Iterator[Chunk]:
    names = ["model_version", "churn_probability", EXTRA_FIELD, *RAW_COLUMNS]
    dtypes: dict[Hashable, str] = {n: "object" for n in names}
    dtypes["churn_probability"] = "float64"
    dtypes.update({n: "float64" for n in RAW_COLUMNS if COLUMN_KINDS[n] is ColumnKind.NUMBER})
    document = _pg_csv(engine, start, end, version, bar)
    if not document:
        return
    reader = pd.read_csv(
        io.BytesIO(document), names=names, dtype=dtypes, chunksize=chunk_rows,
        keep_default_na=False, na_values=[""],
    )  # fmt: skip
    booleans = [n for n in RAW_COLUMNS if COLUMN_KINDS[n] is ColumnKind.BOOLEAN]
    for frame in reader:
        for name in booleans:  # 't' / 'f' / missing → 1.0 / 0.0 / NaN
            column = frame[name]
            frame[name] = np.where(column.isna(), np.nan, (column == "t").astype(np.float64))
        extras = [None if pd.isna(e) else orjson.loads(e) for e in frame[EXTRA_FIELD]]
        raw = encode_frame(frame[list(RAW_COLUMNS)])
        yield frame["model_version"].to_numpy(), frame["churn_probability"].to_numpy(), extras, raw


def _read_generic(
    engine: Engine, start: datetime, end: datetime, version: str | None, chunk_rows: int, bar: tqdm
) -> Iterator[Chunk]:
    for chunk in _chunks(engine, start, end, version, chunk_rows):
        versions = np.array([row[0] for row in chunk], dtype=object)
        probabilities = np.fromiter((row[1] for row in chunk), np.float64, len(chunk))
        documents = [orjson.loads(row[2]) for row in chunk]
        extras = [d.get(EXTRA_FIELD) for d in documents]
        yield versions, probabilities, extras, encode_logged(documents)
        bar.update(len(chunk))


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
    read = _read_postgres if engine.dialect.name == "postgresql" else _read_generic
    with tqdm(
        total=total, desc="reading the prediction log", unit="rows", disable=not progress
    ) as bar:
        for versions, probabilities, extras, raw in read(
            engine, start, end, version, chunk_rows, bar
        ):
            for name in pd.unique(versions):
                mask = versions == name
                part = parts.setdefault(str(name), _Parts())
                part.raw.append(raw[mask])
                part.probabilities.append(probabilities[mask])
                chosen = [e for e, keep in zip(extras, mask, strict=True) if keep]
                part.extras.extend(chosen)  # type: ignore[arg-type]
                part.has_extras = part.has_extras or any(e for e in chosen)
    return {name: part.rows() for name, part in parts.items()}
