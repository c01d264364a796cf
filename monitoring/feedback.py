"""Ground truth: which customers actually churned, from the API or from a file.

Labels are keyed by (customer hash, observed date): sending the same label again, from a
retried request or a re-imported file, updates the row instead of adding one.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import Connection, Engine

from core.schema import CustomerId
from core.tables import accepted_suffixes, parse_yes_no, table_kind
from monitoring.database import GROUND_TRUTH, dialect_insert
from monitoring.identity import customer_hash
from monitoring.privacy import drop_deleted_rows
from monitoring.rows import RowCodec
from monitoring.spool import Spool

LABELS_SPOOL_PREFIX = "labels"
_UPSERT_CHUNK_ROWS = 1000


class Label(BaseModel):
    """One observed outcome, as sent to `/feedback` or read from a label file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: CustomerId
    churned: bool
    observed_date: date


LABEL_COLUMNS: tuple[str, ...] = tuple(Label.model_fields)
"""The columns a label file must have."""


class LabelFileError(ValueError):
    """A label file that cannot be read; the message names the row and the column."""

    def __init__(self, message: str, *, row: int | None = None, column: str | None = None):
        super().__init__(message)
        self.row = row
        self.column = column


@dataclass(frozen=True, slots=True)
class LabelRow:
    """One label as the `ground_truth` table stores it: the customer hashed, when it
    arrived. Its fields are the table's columns (but the generated `id`) and drive
    `label_rows` and `decode_label_row`."""

    customer_hash: str
    churned: bool
    observed_date: date
    received_at: datetime


_CODEC = RowCodec(LabelRow, GROUND_TRUTH)


def label_rows(
    labels: Iterable[Label], secret: bytes, received_at: datetime | None = None
) -> list[dict[str, Any]]:
    """Ground-truth rows (hashed ids), one per (customer, date); the last label wins."""
    received = received_at or datetime.now(UTC)
    rows: dict[tuple[str, date], dict[str, Any]] = {}
    for label in labels:
        hashed = customer_hash(label.customer_id, secret)
        row = LabelRow(hashed, label.churned, label.observed_date, received)
        rows[hashed, label.observed_date] = _CODEC.row(row)
    return list(rows.values())


def _newest_per_key(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One row per key: PostgreSQL refuses a statement that updates a row twice."""
    newest: dict[tuple[str, date], Mapping[str, Any]] = {}
    for row in rows:
        key = (row["customer_hash"], row["observed_date"])
        kept = newest.get(key)
        if kept is None or kept["received_at"] <= row["received_at"]:
            newest[key] = row
    return list(newest.values())


def upsert_ground_truth(connection: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert or update hashed label rows in the caller's transaction.

    An older label never overwrites a newer one, so a label replayed late from the spool
    cannot undo a correction that arrived in the meantime; and a label received before
    its customer was deleted is dropped (`drop_deleted_rows`).
    """
    insert = dialect_insert(connection, GROUND_TRUTH)
    statement = insert.on_conflict_do_update(
        index_elements=["customer_hash", "observed_date"],
        set_={"churned": insert.excluded.churned, "received_at": insert.excluded.received_at},
        where=GROUND_TRUTH.c.received_at <= insert.excluded.received_at,
    )
    unique = _newest_per_key(rows)
    for start in range(0, len(unique), _UPSERT_CHUNK_ROWS):
        connection.execute(statement, unique[start : start + _UPSERT_CHUNK_ROWS])
    drop_deleted_rows(connection, GROUND_TRUTH, unique)


def store_labels(engine: Engine, labels: Iterable[Label], secret: bytes) -> int:
    """Upsert labels in one transaction; returns how many distinct labels were stored."""
    rows = label_rows(labels, secret)
    if rows:
        with engine.begin() as connection:
            upsert_ground_truth(connection, rows)
    return len(rows)


def spool_labels(spool_dir: Path, labels: Sequence[Label], secret: bytes) -> int:
    """Keep labels on disk (hashed, fsynced) while the database is down.

    The prediction log replays them when the database is back. Hashing first keeps raw
    customer ids off the disk here too.
    """
    rows = label_rows(labels, secret)
    Spool(spool_dir, prefix=LABELS_SPOOL_PREFIX).append(rows)
    return len(rows)


def decode_label_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A spooled label row back to column values. Raises KeyError/TypeError/ValueError."""
    return _CODEC.decode(row)


# Label files.


def _parse_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)")


def _parse_customer_id(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # numeric ids stored as integers in Parquet
    raise ValueError(f"{value!r} is not a customer id (text)")


_PARSERS = {
    "customer_id": _parse_customer_id,
    "churned": parse_yes_no,
    "observed_date": _parse_date,
}


def _label(where: str, row: Mapping[str, object]) -> Label:
    """One label from a file row; errors say `where` (row, line) and which column."""
    values: dict[str, object] = {}
    for column, parse in _PARSERS.items():
        value = row.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise LabelFileError(f"{where}, column {column!r}: missing value", column=column)
        try:
            values[column] = parse(value)
        except ValueError as error:
            raise LabelFileError(f"{where}, column {column!r}: {error}", column=column) from None
    try:
        return Label.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        column = str(first["loc"][0]) if first["loc"] else "?"
        message = f"{where}, column {column!r}: {first['msg']}"
        raise LabelFileError(message, column=column) from None


def _require_columns(name: str, found: Sequence[str]) -> None:
    for column in LABEL_COLUMNS:
        if column not in found:
            listed = ", ".join(found) or "none"
            message = f"{name}: missing column {column!r} (columns found: {listed})"
            raise LabelFileError(message, column=column)


def _csv_rows(path: Path) -> Iterator[tuple[str, int, dict[str, object]]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [name.strip().lower() for name in next(reader, [])]
        _require_columns(path.name, header)
        for number, values in enumerate(reader, start=1):
            if not any(value.strip() for value in values):
                continue
            where = f"{path.name}: row {number} (line {reader.line_num})"
            yield where, number, dict(zip(header, values, strict=False))


def _parquet_rows(path: Path) -> Iterator[tuple[str, int, dict[str, object]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise LabelFileError(f"{path.name}: not a readable Parquet file ({error})") from None
    names = [name.strip().lower() for name in parquet.schema_arrow.names]
    _require_columns(path.name, names)
    number = 0
    for batch in parquet.iter_batches(columns=list(parquet.schema_arrow.names)):
        for values in batch.to_pylist():
            number += 1
            row = {key.strip().lower(): value for key, value in values.items()}
            yield f"{path.name}: row {number}", number, row


def read_label_file(path: Path | str) -> list[Label]:
    """Labels from a CSV (or gzipped CSV) or Parquet file with customer_id, churned,
    observed_date: the file types training tables may be (`core.tables`).

    `churned` may be a boolean, 0/1 or a yes/no word (`core.tables.YES_NO_WORDS`, any
    case). Raises LabelFileError naming the first bad row and column; nothing is stored
    from a bad file.
    """
    file = Path(path)
    if not file.is_file():
        raise LabelFileError(f"{file}: no such file")
    kind = table_kind(file)
    if kind is None:
        message = f"{file.name}: unsupported file type {file.suffix.lower()!r}"
        raise LabelFileError(f"{message}; use {accepted_suffixes()}")
    rows = _csv_rows(file) if kind == "csv" else _parquet_rows(file)
    labels: list[Label] = []
    try:
        for where, number, row in rows:
            try:
                labels.append(_label(where, row))
            except LabelFileError as error:
                error.row = number
                raise
    except UnicodeDecodeError as error:
        raise LabelFileError(f"{file.name}: not UTF-8 text ({error})") from None
    except (gzip.BadGzipFile, EOFError) as error:
        raise LabelFileError(f"{file.name}: not a readable gzip file ({error})") from None
    return labels
