"""A logged row's column values, derived from the dataclass that declares the row.

A row type (`PredictionRecord`, `LabelRow`) is declared once, as a dataclass whose fields
are its table's columns. `RowCodec` reads the field types to turn a record into plain
column values (what psycopg binds and the spool writes as JSON) and a spooled JSON row
back into them, and refuses, at import, a dataclass and a table that disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields, is_dataclass
from datetime import date, datetime
from types import NoneType, UnionType
from typing import Any, get_args, get_origin, get_type_hints

from sqlalchemy import Table

_TO_COLUMN: dict[type, Callable[[Any], Any] | None] = {
    str: str,
    float: float,
    bool: bool,
    int: int,
    dict: None,
    datetime: None,
    date: None,
}
"""Per field type, how a value becomes a plain column value (None: it already is one).
A numpy scalar from the scoring path would not bind on psycopg; `float()` makes it one."""

_FROM_JSON: dict[type, Callable[[Any], Any]] = {
    datetime: datetime.fromisoformat,
    date: date.fromisoformat,
}
"""Types JSON writes as text (ISO 8601); every other spooled value is read as it is."""


class RowCodec:
    """Column values of one row type, in its table's column order."""

    def __init__(self, row_type: type, table: Table) -> None:
        if not is_dataclass(row_type):
            raise TypeError(f"{row_type.__name__} is not a dataclass")
        hints = get_type_hints(row_type)
        declared = {f.name: hints[f.name] for f in fields(row_type)}
        stored = [c.name for c in table.columns if c is not table.autoincrement_column]
        if set(declared) != set(stored):
            raise TypeError(
                f"{row_type.__name__} fields {sorted(declared)} are not the columns of "
                f"table {table.name!r} {sorted(stored)}"
            )
        types = {name: _plain_type(hint) for name, hint in declared.items()}
        optional = {name for name, hint in declared.items() if _is_optional(hint)}
        unknown = {name: t for name, t in types.items() if t not in _TO_COLUMN}
        if unknown:
            raise TypeError(f"{row_type.__name__}: no column conversion for {unknown}")
        self.columns: tuple[str, ...] = tuple(stored)
        self._defaults = {f.name: f.default for f in fields(row_type) if f.default is not MISSING}
        """What a spooled line written before a column existed holds for it."""
        self._to_column = tuple(
            (
                name,
                _or_none(_TO_COLUMN[types[name]]) if name in optional else _TO_COLUMN[types[name]],
            )
            for name in stored
        )
        self._from_json = tuple(
            (
                name,
                _or_none(_FROM_JSON.get(types[name]))
                if name in optional
                else _FROM_JSON.get(types[name]),
            )
            for name in stored
        )

    def row(self, record: object) -> dict[str, Any]:
        """The record's column values, each of its declared plain type."""
        return {
            name: getattr(record, name) if convert is None else convert(getattr(record, name))
            for name, convert in self._to_column
        }

    def decode(self, spooled: Mapping[str, Any]) -> dict[str, Any]:
        """A spooled (JSON) row back to column values; a column added since the line was
        written takes its field's default. Raises KeyError/TypeError/ValueError."""
        if not self._defaults.keys() <= spooled.keys():
            spooled = {**self._defaults, **spooled}
        return {
            name: spooled[name] if parse is None else parse(spooled[name])
            for name, parse in self._from_json
        }


def _is_optional(hint: Any) -> bool:
    return get_origin(hint) is UnionType and NoneType in get_args(hint)


def _plain_type(hint: Any) -> Any:
    """`str` for `str` and `str | None`; the origin of a generic (`dict[str, Any]` → `dict`)."""
    if _is_optional(hint):
        (hint,) = [arg for arg in get_args(hint) if arg is not NoneType]
    return get_origin(hint) or hint


def _or_none(convert: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """`convert` for a column that may hold None (None stays None)."""
    if convert is None:
        return None
    return lambda value: None if value is None else convert(value)
