"""Data profiles: a short YAML file that maps a foreign customer table onto `CustomerData`.

A profile renames columns, derives columns from others with expressions
(``training.expressions``), maps values (``Fiber optic`` → ``Fiber``, ``Yes``/``No`` →
booleans), converts units, names the target and its positive value, lists extra columns
that carry signal but have no canonical field, and may generate row ids for a table that
has none. Built-in profiles live beside this module in ``profiles/`` (``telco`` for the
IBM Telco table).

The order: missing tokens → rename → derive → value maps → units → validation
(``training.data``). So an expression reads the table's own values under their renamed
names (or their own names when not renamed), and a derived column can still be
value-mapped or converted.

Problems fail fast, each naming the column or value: a column the profile names but the
table lacks, an expression naming an unknown column, a value seen in the data that no map
covers, a missing target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.pipeline.extras import ExtraColumn
from core.schema import CATEGORIES, COLUMN_KINDS, ID_COLUMN, ColumnKind, CustomerData
from core.settings import TARGET_COLUMN
from core.tables import YES_NO_WORDS
from training.expressions import ExpressionError, evaluate, expression_names

BUILTIN_DIR = Path(__file__).with_name("profiles")
GENERATED_ID_PREFIX = "row-"
"""`generate_id: true` gives row n (0-based position in the table as read) the id ``row-n``."""


class ProfileError(ValueError):
    """A profile that is malformed or does not fit the table it is applied to."""


class TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    column: str
    positive: str | int | bool = Field(description="Value of `column` that means churned.")


class ExtraSpec(BaseModel):
    """An extra model input taken from a table column."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    source: str | None = Field(default=None, description="Table column; default: `name`.")
    kind: Literal["number", "category"]
    required: bool = True

    @property
    def column(self) -> str:
        return self.source or self.name


class DataProfile(BaseModel):
    """How one kind of customer table maps onto the canonical schema."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    rename: dict[str, str] = Field(default_factory=dict, description="table column → field")
    values: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="field → {table value → canonical value}"
    )
    units: dict[str, float] = Field(
        default_factory=dict, description="field → factor, e.g. days → months: 0.0328549"
    )
    missing: list[str] = Field(
        default_factory=lambda: ["", " "], description="Table values that mean missing."
    )
    target: TargetSpec
    extras: list[ExtraSpec] = Field(default_factory=list)
    derive: dict[str, str] = Field(
        default_factory=dict,
        description="field or extra column → expression over the renamed table's columns",
    )
    generate_id: bool = Field(
        default=False, description="Give a table without an id column ids `row-<n>`."
    )

    @model_validator(mode="after")
    def _fields_exist(self) -> DataProfile:
        fields = set(CustomerData.model_fields)
        for source, field in self.rename.items():
            if field not in fields:
                raise ValueError(f"rename: {source!r} → {field!r}, which is not a customer field")
        extra_columns = {e.column for e in self.extras}
        for target, expression in self.derive.items():
            if target not in fields and target not in extra_columns:
                raise ValueError(f"derive.{target}: not a customer field nor an extra's column")
            if target in self.rename.values():
                raise ValueError(f"derive.{target}: {target!r} is also a rename target")
            try:
                expression_names(expression)
            except ExpressionError as error:
                raise ValueError(f"derive.{target}: {error}") from error
        if self.generate_id and ID_COLUMN in [*self.rename.values(), *self.derive]:
            raise ValueError(f"generate_id: true, yet a column already maps to {ID_COLUMN!r}")
        for field in [*self.values, *self.units]:
            if field not in fields:
                raise ValueError(f"{field!r} is not a customer field")
        for extra in self.extras:
            if extra.name in fields:
                raise ValueError(f"extra {extra.name!r} clashes with a customer field")
        return self


def load_profile(name_or_path: str | Path) -> DataProfile:
    """A built-in profile by name (``telco``) or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = BUILTIN_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            builtin = sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))
            raise ProfileError(f"no built-in profile {name_or_path!r}; built-in: {builtin}")
    if not path.exists():
        raise ProfileError(f"profile file {path} does not exist")
    try:
        return DataProfile.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as exc:
        raise ProfileError(f"profile {path}: {exc}") from exc


def _canonical_value(field: str, value: Any) -> bool:
    """Whether an (unmapped) value is already acceptable for a canonical field."""
    kind = COLUMN_KINDS.get(field)
    if kind is ColumnKind.CATEGORY:
        return value in CATEGORIES[field]
    if kind is ColumnKind.BOOLEAN:
        return isinstance(value, bool | int) or str(value).strip().lower() in YES_NO_WORDS
    return True


def _map_values(table: pd.DataFrame, field: str, mapping: dict[str, Any], source: str) -> None:
    """Apply a value map in place; a value neither mapped nor canonical is an error."""
    column = table[field]
    as_text = column.astype("string")
    mapped = as_text.map(lambda v: mapping.get(v, v) if v is not pd.NA else None)
    observed = column.notna() & ~as_text.isin(list(mapping))
    unmapped = sorted({v for v in column[observed].astype(str) if not _canonical_value(field, v)})
    if unmapped:
        raise ProfileError(
            f"column {source!r} (→ {field}): value(s) {unmapped[:5]} seen in the data but "
            f"not mapped by the profile's values.{field}"
        )
    table[field] = mapped.astype(object)


def apply_profile(
    table: pd.DataFrame, profile: DataProfile
) -> tuple[pd.DataFrame, list[ExtraColumn]]:
    """Rename, map and convert `table` into canonical columns plus the profile's extras.

    Returns the canonical frame (with the `churned` label and the extra columns under
    their names) and the extra-column specs, categories not yet learned.
    """
    extra_columns = [e.column for e in profile.extras if e.column not in profile.derive]
    named = [*profile.rename, profile.target.column, *extra_columns]
    absent = [c for c in dict.fromkeys(named) if c not in table.columns]
    if absent:
        raise ProfileError(
            f"profile {profile.name!r} names column(s) {absent} that the table does not have; "
            f"table columns: {list(table.columns)}"
        )
    frame = table.replace({token: pd.NA for token in profile.missing})
    target = frame[profile.target.column]
    positive = str(profile.target.positive)
    labels = target.astype("string")
    if labels.isna().any():
        raise ProfileError(f"target column {profile.target.column!r} has missing values")
    if not (labels == positive).any():
        raise ProfileError(
            f"target column {profile.target.column!r} never equals the positive value "
            f"{positive!r}; values seen: {sorted(labels.unique())[:10]}"
        )
    out = frame.rename(columns=profile.rename)
    for derived, expression in profile.derive.items():
        out[derived] = _derived(out, profile, derived, expression)
    reverse = {field: source for source, field in profile.rename.items()}
    for field, mapping in profile.values.items():
        if field in out.columns:
            _map_values(out, field, mapping, reverse.get(field, field))
    for field, factor in profile.units.items():
        if field in out.columns:
            converted = pd.to_numeric(out[field], errors="coerce") * factor
            whole = CustomerData.model_fields[field].annotation in (int, int | None)
            out[field] = converted.round() if whole else converted  # 730.5 days → 24 months
    keep = [c for c in out.columns if c in CustomerData.model_fields]
    result = out[keep].copy()
    result[TARGET_COLUMN] = (labels == positive).astype(int).to_numpy()
    for extra in profile.extras:
        source = out if extra.column in profile.derive else frame
        result[extra.name] = source[extra.column].to_numpy()
    if profile.generate_id:
        result.insert(0, ID_COLUMN, generated_ids(len(result)))
    if ID_COLUMN not in result.columns:
        raise ProfileError(
            f"no column maps to {ID_COLUMN!r}: add it to the profile's rename, "
            "or set generate_id: true (training only: serving still needs real ids)"
        )
    extras = [ExtraColumn(e.name, e.kind, (), e.required) for e in profile.extras]
    return result, extras


def generated_ids(rows: int) -> list[str]:
    """``row-0``, ``row-1``, …: stable for the same file read again, unique per row, and
    the row numbers that validation errors and the bad-rows report use. (A hash of each
    row would survive re-ordering, but identical rows would share an id and be dropped as
    duplicates.)"""
    return [f"{GENERATED_ID_PREFIX}{n}" for n in range(rows)]


def _derived(frame: pd.DataFrame, profile: DataProfile, target: str, expression: str) -> Any:
    """One derived column, or a `ProfileError` naming the profile key and the column."""
    where = f"profile {profile.name!r}, derive.{target}"
    unknown = [n for n in expression_names(expression) if n not in frame.columns]
    if unknown:
        raise ProfileError(
            f"{where}: unknown column(s) {unknown} in {expression!r}; columns after rename: "
            f"{list(frame.columns)}"
        )
    try:
        return evaluate(frame, expression)
    except (TypeError, ValueError, KeyError, ArithmeticError) as error:
        raise ProfileError(f"{where}: {expression!r} failed on the table: {error}") from error


def load_profiled_table(
    source: str, query: str | None, profile: str | Path | None
) -> tuple[pd.DataFrame, list[ExtraColumn]]:
    """Load a table and, with a profile, map it onto the canonical columns."""
    from training.data import load_table

    table = load_table(source, query)
    if profile is None:
        return table, []
    return apply_profile(table, load_profile(profile))
