"""A data profile's derived columns: small expressions evaluated with `DataFrame.eval`.

pandas' parser already refuses most of Python (``__import__('os')`` is "not a supported
function"), but it resolves attributes and calls methods on what they return, so an
expression's syntax tree is checked against a whitelist first: column names (backticks
for names that are not identifiers), numbers, strings, arithmetic, comparisons,
``and``/``or``/``not`` and a few math functions. Python's own `eval` is never involved.
"""

from __future__ import annotations

import ast
import re

import pandas as pd

ENGINE = "python"
"""`DataFrame.eval` engine: numexpr is not a dependency, and a profile's expressions run
once per table, vectorised either way."""

FUNCTIONS = frozenset({"abs", "sqrt", "log", "log1p", "exp", "floor", "ceil"})
"""Functions an expression may call (pandas' eval supports these by name)."""

_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.Name,
    ast.Constant,
    ast.Load,
    ast.operator,
    ast.unaryop,
    ast.boolop,
    ast.cmpop,
)
_OPERATORS: tuple[type[ast.operator], ...] = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)
_OPERATORS += (ast.FloorDiv, ast.Mod, ast.BitAnd, ast.BitOr)  # & and |: element-wise and/or
_BACKTICKED = re.compile(r"`([^`]*)`")


class ExpressionError(ValueError):
    """An expression that does not parse or uses something outside the whitelist."""


def expression_names(expression: str) -> list[str]:
    """The column names `expression` reads, in order; `ExpressionError` if it is refused."""
    quoted: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        quoted.append(match.group(1))
        return f"__column_{len(quoted) - 1}"

    try:
        tree = ast.parse(_BACKTICKED.sub(placeholder, expression).strip(), mode="eval")
    except SyntaxError as error:
        raise ExpressionError(f"syntax error in {expression!r}: {error.msg}") from error
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            _check_call(node, expression)
        elif not isinstance(node, _NODES) or (
            isinstance(node, ast.operator) and not isinstance(node, _OPERATORS)
        ):
            raise ExpressionError(
                f"{expression!r}: {type(node).__name__} is not allowed (only column names, "
                f"numbers, strings, arithmetic, comparisons, and/or/not and {sorted(FUNCTIONS)})"
            )
        elif isinstance(node, ast.Constant) and not isinstance(node.value, int | float | str):
            raise ExpressionError(f"{expression!r}: constant {node.value!r} is not allowed")
        elif isinstance(node, ast.Name) and node.id not in FUNCTIONS:
            match = re.fullmatch(r"__column_(\d+)", node.id)
            names.append(quoted[int(match.group(1))] if match else node.id)
    return list(dict.fromkeys(names))


def _check_call(node: ast.Call, expression: str) -> None:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        called = ast.unparse(node.func)
        raise ExpressionError(
            f"{expression!r}: calling {called!r} is not allowed (functions: {sorted(FUNCTIONS)})"
        )
    if node.keywords or len(node.args) != 1:
        raise ExpressionError(f"{expression!r}: {node.func.id}() takes one argument")


def _numeric_if_possible(column: pd.Series) -> pd.Series:
    """Text that is all numbers (a CSV column with blanks) as float, other columns as-is."""
    if not (column.dtype == object or pd.api.types.is_string_dtype(column)):
        return column
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers.astype("float64") if numbers.notna().sum() == column.notna().sum() else column


def evaluate(frame: pd.DataFrame, expression: str) -> pd.Series:
    """`expression` over `frame`'s columns, one value per row (names checked by the caller);
    missing wherever a column it reads is missing."""
    names = expression_names(expression)
    columns = pd.DataFrame(
        {name: _numeric_if_possible(frame[name]) for name in names}, index=frame.index
    )
    result = columns.eval(expression, engine=ENGINE)
    if isinstance(result, pd.Series):
        values = result.rename(None)
    else:  # an expression without columns: one value for every row
        values = pd.Series(result, index=frame.index)
    if pd.api.types.is_bool_dtype(values):
        values = values.astype("boolean")  # so a comparison can be missing too
    return values.mask(columns.isna().any(axis=1))  # NaN > 3 is False: make it missing
