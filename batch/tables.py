"""Customer tables as Dask DataFrames: read in partitions, written back in partitions.

A path is anything fsspec opens: a local file or folder, or ``s3://bucket/key`` (with
`s3fs` installed and credentials in the environment, as for any fsspec reader). A Parquet
input is a file, a folder of part files or a glob; a CSV input a file or a glob, cut into
blocks of `blocksize` bytes (a ``.csv.gz`` cannot be cut: one partition per file).

Every CSV column is read as text and typed by the same rules as a training table
(`training.data.validate_table`), so a partition never depends on what a reader guessed
from another partition's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import dask.dataframe as dd
import fsspec
import numpy as np
import pandas as pd

from core.pipeline.extras import ExtraColumn
from core.schema import ID_COLUMN
from core.tables import TableKind, accepted_suffixes, table_kind
from training.data import CSV_NA_VALUES, TableSchemaError, validate_table

DEFAULT_BLOCKSIZE = 64 * 2**20
"""Bytes of CSV per partition (about 300,000 customers)."""


class BatchInputError(ValueError):
    """An input cannot be scored or trained on: the message names the file and the rule.

    One plain message, so it survives being pickled back from a worker process."""


def _kind(path: str) -> TableKind:
    """The table format of a path; a folder (or a name without suffix) is a Parquet dataset."""
    kind = table_kind(path.rstrip("/"))
    if kind is not None:
        return kind
    if "." not in path.rstrip("/").rsplit("/", 1)[-1]:
        return "parquet"
    raise BatchInputError(f"cannot read or write {path}: use a {accepted_suffixes()} suffix")


def _require_input(path: str) -> None:
    filesystem, root = fsspec.core.url_to_fs(path)
    if not filesystem.glob(root):
        raise BatchInputError(f"no such file or folder: {path}")


def read_table(path: str, blocksize: int = DEFAULT_BLOCKSIZE) -> dd.DataFrame:
    """The table at `path` as partitions of plain pandas columns (object text, not Arrow
    strings: what pandas itself reads, and what `validate_table` is written for)."""
    kind = _kind(path)
    _require_input(path)
    with dask.config.set({"dataframe.convert-string": False}):
        if kind == "parquet":
            return dd.read_parquet(path)
        compressed = path.lower().endswith(".gz")
        return dd.read_csv(
            path,
            dtype=object,
            keep_default_na=False,
            na_values=CSV_NA_VALUES,
            blocksize=None if compressed else blocksize,
        )


def part_name(number: int) -> str:
    """A Parquet part file's name: zero-padded, so the names sort in partition order."""
    return f"part.{number:06d}.parquet"


def write_table(frame: dd.DataFrame, path: str, rows: Any) -> list[Any]:
    """The lazy write of `frame` to `path`, and `rows` (a lazy scalar of the same graph) in
    a form that computes with it: Parquet as a folder of part files (one per partition, in
    order), CSV as one file with a header (a delayed chain, so `rows` becomes delayed too)."""
    if _kind(path) == "parquet":
        return [
            frame.to_parquet(path, write_index=False, compute=False, name_function=part_name),
            rows,
        ]
    written = frame.to_csv(path, single_file=True, index=False, compute=False)
    return [written, rows.to_delayed()]


def plain_text(part: pd.DataFrame) -> pd.DataFrame:
    """Arrow-backed text columns as object columns, as pandas' readers give them."""
    text = [name for name, kind in part.dtypes.items() if isinstance(kind, pd.StringDtype)]
    return part.astype(dict.fromkeys(text, object)) if text else part


def rejection(error: TableSchemaError, part: pd.DataFrame, number: int) -> str:
    """Every broken rule of a partition, with the customer ids of the example rows."""
    lines = []
    for problem in error.problems:
        line = f"  - {problem.describe()}"
        if problem.example_rows and ID_COLUMN in part.columns:
            ids = part[ID_COLUMN].iloc[np.asarray(problem.example_rows)].tolist()
            line += f" (customer_id {', '.join(map(repr, ids))})"
        lines.append(line)
    return (
        f"input rejected: partition {number} breaks {len(lines)} rule(s) "
        "(rows counted from the partition's first row):\n" + "\n".join(lines)
    )


def validated(
    part: pd.DataFrame,
    partition_info: dict[str, Any] | None,
    *,
    require_target: bool,
    extras: Sequence[ExtraColumn] = (),
) -> pd.DataFrame:
    """A partition typed by the training table's rules (`validate_table`), or
    `BatchInputError` naming the partition, each broken rule and example customers."""
    source = plain_text(part).reset_index(drop=True)
    try:
        return validate_table(source, require_target=require_target, extras=extras)
    except TableSchemaError as error:
        number = partition_info["number"] if partition_info else 0
        raise BatchInputError(rejection(error, source, number)) from None
