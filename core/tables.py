"""What a table file may be and how it spells yes and no: one rule for every reader.

Training tables (`training/data.py`), data profiles and label files
(`monitoring/feedback.py`) all read these constants, so a file or a word one of them
accepts is accepted by all, and every error names the same list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

TableKind = Literal["csv", "parquet"]

TABLE_SUFFIXES: dict[str, TableKind] = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
"""Accepted file endings (any case) and the format each one holds."""

TRUE_WORDS = frozenset({"true", "yes", "y", "t", "1", "1.0"})
FALSE_WORDS = frozenset({"false", "no", "n", "f", "0", "0.0"})
"""Yes/no spellings, lower case, after trimming. "1.0" and "0.0" are how a 0/1 column
with gaps comes out of a CSV reader (as floats) and then as text."""

YES_NO_WORDS: dict[str, bool] = {
    **dict.fromkeys(TRUE_WORDS, True),
    **dict.fromkeys(FALSE_WORDS, False),
}
"""Each word → its value: what a vectorised reader maps a text column with."""

YES_NO_HINT = "true/false, yes/no, y/n, t/f, 1/0"
"""The words as error messages list them."""


def accepted_suffixes() -> str:
    """The accepted endings as a message says them: ``.csv, .csv.gz, .parquet or .pq``."""
    *first, last = TABLE_SUFFIXES
    return f"{', '.join(first)} or {last}"


def table_kind(path: Path | str) -> TableKind | None:
    """The format of a table file by its ending, or None if it is not one we read."""
    name = Path(path).name.lower()
    for suffix in sorted(TABLE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return TABLE_SUFFIXES[suffix]
    return None


def parse_yes_no(value: object) -> bool:
    """A boolean, 0/1 or one of the yes/no words (any case). Raises ValueError."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        found = YES_NO_WORDS.get(value.strip().lower())
        if found is not None:
            return found
    raise ValueError(f"{value!r} is not a boolean ({YES_NO_HINT})")
