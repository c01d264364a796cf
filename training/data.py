"""Loading a training table and checking it against the schema before training sees it.

`prepare_table` is what training calls: it types every column the way `encode_frame`
expects, refuses the table with one error naming every broken rule (so a bad extract is
fixed in one round trip, not one column at a time), drops duplicate customers and reports
what it did. The rules are read from `CustomerData`'s field metadata, so they cannot drift
from what `/predict` accepts. Missing values are allowed: the cleaner imputes them.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import annotated_types as at
import numpy as np
import pandas as pd

from core.pipeline.extras import ExtraColumn
from core.schema import (
    CATEGORIES,
    COLUMN_KINDS,
    ID_COLUMN,
    RAW_COLUMNS,
    REQUIRED_COLUMNS,
    ColumnKind,
    CustomerData,
)
from core.settings import TARGET_COLUMN, TRUE_PROBABILITY_COLUMN
from core.tables import YES_NO_HINT, YES_NO_WORDS, accepted_suffixes, table_kind

MAX_EXAMPLES = 3
"""Rows shown per broken rule in an error message."""
MISSING_COLUMN_RULE = "required column missing"

CSV_NA_VALUES = [
    *("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND"),
    *("1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"),
]
"""pandas' default NA strings without "None", which is an internet_service category."""

_BOOLEAN_RULE = f"must be a boolean ({YES_NO_HINT})"

_BOUNDS: dict[type, tuple[str, str, Callable[[Any, Any], Any]]] = {
    at.Ge: ("ge", ">=", operator.lt),
    at.Gt: ("gt", ">", operator.le),
    at.Le: ("le", "<=", operator.gt),
    at.Lt: ("lt", "<", operator.ge),
}
"""Constraint type → (attribute, rule text, test that flags a *violation*)."""


class DataLoadError(Exception):
    """A training table could not be read (bad path, suffix, URL or query)."""


@dataclass(frozen=True)
class ColumnProblem:
    """One broken rule in one column, with a few offending rows to look at."""

    column: str
    rule: str
    bad_count: int
    example_rows: list[int] = field(default_factory=list)
    example_values: list[object] = field(default_factory=list)

    def describe(self) -> str:
        """One line for an error message: column, rule, count and example rows."""
        if self.rule == MISSING_COLUMN_RULE:
            return f"{self.column}: {self.rule}"
        text = f"{self.column}: {self.rule} — {self.bad_count} bad row(s)"
        if self.example_rows:
            shown = ", ".join(
                f"row {r} ({v!r})"
                for r, v in zip(self.example_rows, self.example_values, strict=True)
            )
            text += f", e.g. {shown}"
        return text


class TableSchemaError(ValueError):
    """The table breaks schema rules; `problems` lists every one of them, `rows[i]` the
    positions of every row breaking problem i (empty for a missing column)."""

    def __init__(self, problems: list[ColumnProblem], rows: list[np.ndarray] | None = None) -> None:
        self.problems = problems
        self.rows = rows if rows is not None else [np.empty(0, np.int64) for _ in problems]
        lines = "\n".join(f"  - {p.describe()}" for p in problems)
        super().__init__(f"training table failed validation ({len(problems)} problem(s)):\n{lines}")


# --- Loading -----------------------------------------------------------------------------


def _read_file(path: Path) -> pd.DataFrame:
    kind = table_kind(path)
    if kind == "csv":
        return pd.read_csv(
            path, keep_default_na=False, na_values=CSV_NA_VALUES, dtype={ID_COLUMN: str}
        )
    if kind == "parquet":
        return pd.read_parquet(path)
    raise DataLoadError(f"cannot read {path}: unknown suffix (use {accepted_suffixes()})")


def load_table(source: str | Path, query: str | None = None) -> pd.DataFrame:
    """Read a table from a CSV/Parquet file, or from a SQLAlchemy URL with `query`."""
    text = str(source)
    if "://" in text:
        return _read_sql(text, query)
    if query is not None:
        raise DataLoadError(f"a query only applies to database URLs, not to {text}")
    path = Path(source)
    if not path.is_file():
        raise DataLoadError(f"no such file: {path}")
    try:
        return _read_file(path)
    except DataLoadError:
        raise
    except (OSError, ValueError) as error:  # parser and Arrow errors are ValueErrors
        raise DataLoadError(f"cannot read {path}: {error}") from error


def _read_sql(url: str, query: str | None) -> pd.DataFrame:
    """Run `query` against the database at `url` (imports SQLAlchemy only when needed)."""
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    if not query:
        raise DataLoadError(f"reading from a database URL needs a query ({_safe_url(url)})")
    try:
        engine = sqlalchemy.create_engine(url)
    except (SQLAlchemyError, ValueError, ImportError) as error:
        raise DataLoadError(f"bad database URL {_safe_url(url)}: {error}") from error
    try:
        with engine.connect() as connection:
            return pd.read_sql(sqlalchemy.text(query), connection)
    except (SQLAlchemyError, pd.errors.DatabaseError) as error:
        raise DataLoadError(f"query failed on {_safe_url(url)}: {error}") from error
    finally:
        engine.dispose()


def _safe_url(url: str) -> str:
    """The URL with any password masked, fit for an error message or a log."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable database URL>"


# --- Validation --------------------------------------------------------------------------


class _Checker:
    """Collects problems while columns are converted, so all are reported at once."""

    def __init__(self) -> None:
        self.problems: list[ColumnProblem] = []
        self.rows: list[np.ndarray] = []

    def flag(self, column: str, rule: str, bad: np.ndarray, values: pd.Series) -> None:
        """Record `rule` as broken where the boolean mask `bad` is true."""
        rows = np.flatnonzero(bad)
        if rows.size:
            shown = rows[:MAX_EXAMPLES]
            examples = [_plain(v) for v in values.iloc[shown]]
            self.problems.append(
                ColumnProblem(column, rule, int(rows.size), [int(r) for r in shown], examples)
            )
            self.rows.append(rows)

    def missing_column(self, column: str, rows: int) -> None:
        self.problems.append(ColumnProblem(column, MISSING_COLUMN_RULE, rows))
        self.rows.append(np.empty(0, np.int64))


def _plain(value: object) -> object:
    """A numpy/pandas scalar as a plain Python value, for readable messages."""
    return value.item() if isinstance(value, np.generic) else value


def _as_text(column: pd.Series) -> pd.Series:
    """Values as text, missing ones left missing (pandas 2's astype(str) spells them "nan")."""
    return column.astype("str").mask(column.isna())


def _blank_to_na(column: pd.Series) -> pd.Series:
    """Whitespace-only text counts as missing, like an empty CSV cell."""
    if column.dtype == object or pd.api.types.is_string_dtype(column):
        text = column.astype("str")
        return column.mask(text.str.strip().eq("") & column.notna())
    return column


def _to_number(name: str, column: pd.Series, checker: _Checker) -> pd.Series:
    present = column.notna().to_numpy()
    if pd.api.types.is_bool_dtype(column):
        column = column.astype("float64")
    numbers = pd.to_numeric(column, errors="coerce").astype("float64")
    values = numbers.to_numpy()
    checker.flag(name, "must be a number", present & np.isnan(values), column)
    checker.flag(name, "must be finite", np.isinf(values), column)
    spec = CustomerData.model_fields.get(name)
    if spec is None:  # an extra column: any finite number
        return numbers
    if spec.annotation in (int, int | None):
        whole = np.isfinite(values) & (values != np.round(values))
        checker.flag(name, "must be a whole number", whole, column)
    for constraint in spec.metadata:
        if type(constraint) in _BOUNDS:
            attribute, symbol, violates = _BOUNDS[type(constraint)]
            bound = getattr(constraint, attribute)
            with np.errstate(invalid="ignore"):
                bad = violates(values, bound) & np.isfinite(values)
            checker.flag(name, f"must be {symbol} {bound}", bad, column)
    return numbers


def _to_boolean(name: str, column: pd.Series, checker: _Checker, rule: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(column):
        return column.astype("boolean")
    present = column.notna()
    words = column[present].astype("str").str.strip().str.lower().map(YES_NO_WORDS)
    checker.flag(name, rule, (present & words.reindex(column.index).isna()).to_numpy(), column)
    out = pd.Series(pd.NA, index=column.index, dtype="boolean")
    out[present] = words.astype("boolean")
    return out


def _to_category(name: str, column: pd.Series, checker: _Checker) -> pd.Series:
    vocabulary = CATEGORIES[name]
    bad = column.notna() & ~column.isin(vocabulary)
    checker.flag(name, f"must be one of {list(vocabulary)}", bad.to_numpy(), column)
    return _as_text(column)


def _to_date(name: str, column: pd.Series, checker: _Checker) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(column):
        dates = column
    else:
        dates = pd.to_datetime(column, errors="coerce", format="ISO8601")
        retry = dates.isna() & column.notna()
        if retry.any():  # a few non-ISO spellings: parse just those, row by row
            dates[retry] = pd.to_datetime(column[retry], errors="coerce", format="mixed")
    if getattr(dates.dt, "tz", None) is not None:
        dates = dates.dt.tz_localize(None)
    bad = (dates.isna() & column.notna()).to_numpy()
    checker.flag(name, "must be a date", bad, column)
    return dates.dt.normalize().astype("datetime64[s]")  # day precision, never overflows


def _to_id(original: pd.Series, checker: _Checker) -> pd.Series:
    column = _blank_to_na(original)
    ids = _as_text(column)
    checker.flag(ID_COLUMN, "must not be missing or blank", column.isna().to_numpy(), original)
    lengths = ids.str.len()
    pattern = None
    for constraint in CustomerData.model_fields[ID_COLUMN].metadata:
        if isinstance(constraint, at.MinLen):
            rule = f"must have at least {constraint.min_length} character(s)"
            checker.flag(ID_COLUMN, rule, (lengths < constraint.min_length).to_numpy(), column)
        elif isinstance(constraint, at.MaxLen):
            rule = f"must have at most {constraint.max_length} character(s)"
            checker.flag(ID_COLUMN, rule, (lengths > constraint.max_length).to_numpy(), column)
        else:
            pattern = getattr(constraint, "pattern", None) or pattern
    if pattern is not None:
        bad = column.notna() & ~ids.str.contains(re.compile(pattern), na=False)
        checker.flag(ID_COLUMN, f"must match pattern {pattern!r}", bad.to_numpy(), column)
    return ids


def _convert(name: str, column: pd.Series, checker: _Checker) -> pd.Series:
    kind = COLUMN_KINDS[name]
    if kind is ColumnKind.NUMBER:
        return _to_number(name, column, checker)
    if kind is ColumnKind.BOOLEAN:
        return _to_boolean(name, column, checker, _BOOLEAN_RULE)
    if kind is ColumnKind.CATEGORY:
        return _to_category(name, column, checker)
    return _to_date(name, column, checker)


def _to_target(column: pd.Series, checker: _Checker, required: bool) -> pd.Series:
    """The label as 0/1 int (float with NaN only when it is optional and has gaps)."""
    labels = _to_boolean(TARGET_COLUMN, column, checker, _BOOLEAN_RULE)
    if required:
        checker.flag(TARGET_COLUMN, "must not be missing", column.isna().to_numpy(), column)
    if labels.isna().any():
        return labels.astype("float64")
    return labels.astype("int64")


def _to_probability(column: pd.Series, checker: _Checker) -> pd.Series:
    values = pd.to_numeric(column, errors="coerce").astype("float64")
    bad = column.notna() & ~values.between(0.0, 1.0)
    checker.flag(TRUE_PROBABILITY_COLUMN, "must be a probability in [0, 1]", bad.to_numpy(), column)
    return values


def validate_table(
    frame: pd.DataFrame, *, require_target: bool = True, extras: Sequence[ExtraColumn] = ()
) -> pd.DataFrame:
    """A typed copy of `frame` ready for `encode_frame`, or `TableSchemaError`.

    Output types: id and categories `str`, numbers float64 (NaN for missing), booleans
    pandas ``boolean``, dates datetime64[s], the target 0/1 int. A data profile's `extras`
    are kept (numbers checked as numbers, categories as text); other unknown columns are
    dropped.
    """
    checker = _Checker()
    source = frame.reset_index(drop=True)
    out: dict[str, pd.Series] = {}
    for name in REQUIRED_COLUMNS:
        if name not in source.columns:
            checker.missing_column(name, len(source))
    if ID_COLUMN in source.columns:
        out[ID_COLUMN] = _to_id(source[ID_COLUMN], checker)
    for name in RAW_COLUMNS:
        if name in source.columns:
            out[name] = _convert(name, _blank_to_na(source[name]), checker)
    for extra in extras:
        if extra.name not in source.columns:
            checker.missing_column(extra.name, len(source))
        elif extra.kind == "number":
            out[extra.name] = _to_number(extra.name, _blank_to_na(source[extra.name]), checker)
        else:
            out[extra.name] = _blank_to_na(source[extra.name]).astype("string")
    if TARGET_COLUMN in source.columns:
        target = _blank_to_na(source[TARGET_COLUMN])
        out[TARGET_COLUMN] = _to_target(target, checker, require_target)
    elif require_target:
        checker.missing_column(TARGET_COLUMN, len(source))
    if TRUE_PROBABILITY_COLUMN in source.columns:
        out[TRUE_PROBABILITY_COLUMN] = _to_probability(source[TRUE_PROBABILITY_COLUMN], checker)
    if checker.problems:
        raise TableSchemaError(checker.problems, checker.rows)
    return pd.DataFrame(out, index=source.index)


# --- Deduplication and reporting ---------------------------------------------------------


def deduplicate(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop repeated customer ids, keeping each customer's first row."""
    repeated = frame[ID_COLUMN].duplicated(keep="first").to_numpy()
    kept = frame.loc[~repeated].reset_index(drop=True)
    return kept, int(repeated.sum())


@dataclass(frozen=True)
class DataQualityReport:
    """What `prepare_table` saw and did, for logs and the training run's metadata."""

    rows_in: int
    rows_out: int
    duplicates_dropped: int
    missing_fraction: dict[str, float]
    churn_rate: float | None
    bad_rows_skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return asdict(self)


def quality_report(
    raw: pd.DataFrame, cleaned: pd.DataFrame, duplicates: int, bad_rows_skipped: int = 0
) -> DataQualityReport:
    """Summarise a table before (`raw`) and after (`cleaned`) preparation."""
    features = [c for c in cleaned.columns if c in RAW_COLUMNS]
    missing = cleaned[features].isna().mean() if len(cleaned) else pd.Series(0.0, features)
    churn_rate = None
    if TARGET_COLUMN in cleaned.columns and cleaned[TARGET_COLUMN].notna().any():
        churn_rate = float(cleaned[TARGET_COLUMN].mean())
    return DataQualityReport(
        rows_in=len(raw),
        rows_out=len(cleaned),
        duplicates_dropped=duplicates,
        missing_fraction={name: float(missing[name]) for name in features},
        churn_rate=churn_rate,
        bad_rows_skipped=bad_rows_skipped,
    )


def prepare_table(
    frame: pd.DataFrame, extras: Sequence[ExtraColumn] = ()
) -> tuple[pd.DataFrame, DataQualityReport]:
    """Validate (target required), drop duplicate customers and report: training's entry."""
    return prepared(frame, validate_table(frame, require_target=True, extras=extras))


def prepared(
    raw: pd.DataFrame, typed: pd.DataFrame, bad_rows_skipped: int = 0
) -> tuple[pd.DataFrame, DataQualityReport]:
    """A validated table (`typed`, from `raw`) de-duplicated, with its quality report."""
    cleaned, duplicates = deduplicate(typed)
    return cleaned, quality_report(raw, cleaned, duplicates, bad_rows_skipped)


def split_xy(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Features (target and true probability removed) and the 0/1 label as an int array."""
    if TARGET_COLUMN not in frame.columns:
        raise KeyError(f"table has no {TARGET_COLUMN!r} column to learn from")
    features = frame.drop(columns=[TARGET_COLUMN, TRUE_PROBABILITY_COLUMN], errors="ignore")
    return features, frame[TARGET_COLUMN].to_numpy(dtype=np.int64)


def split_holdout(y: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of the stratified train / held-out split training uses.

    `churn evaluate --holdout` calls it with the seed and test size stored in the model,
    so it scores exactly the rows training held out.
    """
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(len(y)), test_size=test_size, stratify=y, random_state=seed
    )
    return np.asarray(train), np.asarray(test)
