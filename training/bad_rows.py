"""`churn train --on-bad-rows skip`: rows that break a schema rule are set aside, not fatal.

`validate_table` finds every broken rule with every offending row; here those rows are
dropped, the rest validated again (it passes: every rule is per row), and a report — rows
set aside per column and rule, with example rows — is written next to the metrics. A
missing column is never skipped (no row could be kept), and training goes on only when
enough rows are left: `min_training_rows` (core/settings.py) and 2 × `cv_folds` of each
label, so the stratified split and cross-validation still have something to work with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from core.pipeline.extras import ExtraColumn
from core.schema import ID_COLUMN
from core.settings import TARGET_COLUMN, get_settings
from training.data import (
    MAX_EXAMPLES,
    MISSING_COLUMN_RULE,
    TableSchemaError,
    validate_table,
)

BadRowsPolicy = Literal["fail", "skip"]
BAD_ROWS_POLICIES: tuple[BadRowsPolicy, ...] = ("fail", "skip")
REPORT_NAME = "bad_rows.json"


class TooFewRowsError(ValueError):
    """Too little is left to train on once the bad rows are set aside."""


@dataclass(frozen=True)
class SkippedRule:
    """One broken rule: how many rows broke it, and a few of them."""

    column: str
    rule: str
    count: int
    examples: list[dict[str, Any]]


@dataclass(frozen=True)
class BadRowsReport:
    """What `--on-bad-rows skip` set aside (row numbers: 0-based positions in the table)."""

    rows_in: int
    rows_skipped: int
    rows_left: int
    min_rows: int
    rules: list[SkippedRule]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return asdict(self)

    def summary(self) -> str:
        """One line for the console."""
        return (
            f"set aside {self.rows_skipped} of {self.rows_in} row(s) breaking "
            f"{len(self.rules)} rule(s), {self.rows_left} left"
        )


def report_path(metrics_out: Path | None, reports_dir: Path | None) -> Path:
    """Where the report goes: beside `--metrics-out`, else in the reports folder."""
    folder = metrics_out.parent if metrics_out else reports_dir or get_settings().reports_dir
    return folder / REPORT_NAME


def write_report(report: BadRowsReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return path


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _report(
    table: pd.DataFrame, error: TableSchemaError, bad: np.ndarray, min_rows: int
) -> BadRowsReport:
    ids = table[ID_COLUMN] if ID_COLUMN in table.columns else None
    rules = []
    for problem, rows in zip(error.problems, error.rows, strict=True):
        examples = [
            {
                "row": int(row),
                "value": _plain(value),
                ID_COLUMN: None if ids is None else _plain(ids.iloc[row]),
            }
            for row, value in zip(rows[:MAX_EXAMPLES], problem.example_values, strict=False)
        ]
        rules.append(SkippedRule(problem.column, problem.rule, problem.bad_count, examples))
    skipped = int(bad.sum())
    return BadRowsReport(len(table), skipped, len(table) - skipped, min_rows, rules)


def validate_or_skip(
    table: pd.DataFrame,
    extras: Sequence[ExtraColumn],
    policy: BadRowsPolicy,
    min_rows: int,
    min_per_label: int,
    report_to: Path | None = None,
) -> tuple[pd.DataFrame, BadRowsReport | None]:
    """The typed table (`validate_table`), bad rows set aside when `policy` is ``skip``.

    With ``skip`` and bad rows, the report is written to `report_to` (also when too few
    rows are left, so the reason can be read) and returned; `TooFewRowsError` when what
    is left is below `min_rows` rows or `min_per_label` of either label.
    """
    source = table.reset_index(drop=True)
    try:
        return validate_table(source, require_target=True, extras=extras), None
    except TableSchemaError as error:
        if policy == "fail" or any(p.rule == MISSING_COLUMN_RULE for p in error.problems):
            raise
        bad = np.zeros(len(source), dtype=bool)
        for rows in error.rows:
            bad[rows] = True
        report = _report(source, error, bad, min_rows)
    if report_to is not None:
        write_report(report, report_to)
    typed = validate_table(source.loc[~bad], require_target=True, extras=extras)
    counts = typed[TARGET_COLUMN].value_counts()
    fewest = int(min(counts.get(0, 0), counts.get(1, 0)))
    if len(typed) < min_rows or fewest < min_per_label:
        where = f" (report: {report_to})" if report_to else ""
        raise TooFewRowsError(
            f"{report.summary()}: too few to train on — need at least {min_rows} rows "
            f"(min_training_rows) and {min_per_label} of each label, have {len(typed)} rows "
            f"and {fewest} of the rarer label{where}"
        )
    return typed, report
