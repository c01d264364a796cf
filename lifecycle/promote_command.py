"""`churn promote` and `churn guard`: thin over lifecycle/promote.py and lifecycle/guard.py.

Exit codes of `churn promote`, for a cron job to tell the outcomes apart: 0 promoted, 3 the
champion kept (challenger cleared, or none to compare), 4 no decision yet (too few
churners), 2 bad usage. `--dry-run` exits as the real run would, changing nothing.
`churn guard` exits 0 whether or not it rolled back: it prints what it checked.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from lifecycle.commands import _actor, refused_exits
from lifecycle.promote import CLEARED, DEFERRED, NO_CHALLENGER, PROMOTED, PromotionOutcome
from lifecycle.promotion import PromotionDecision

if TYPE_CHECKING:
    from sqlalchemy import Engine

EXIT_CODES = {PROMOTED: 0, CLEARED: 3, NO_CHALLENGER: 3, DEFERRED: 4}


def _engine() -> Engine:
    """The prediction log's database, migrated (as `churn performance` opens it)."""
    from core.settings import get_settings
    from monitoring.database import make_engine, upgrade_schema

    engine = make_engine(get_settings().database_url)
    upgrade_schema(engine)
    return engine


def decision_rows(decision: PromotionDecision) -> list[tuple[str, ...]]:
    """Metric, champion, challenger, difference, interval, margin, verdict — one a metric."""
    alpha = decision.alpha
    rows: list[tuple[str, ...]] = []
    if decision.roc_auc is not None:
        a = decision.roc_auc
        rows.append(
            (
                "roc_auc (DeLong)",
                f"{a.auc_champion:.4f}",
                f"{a.auc_challenger:.4f}",
                f"{a.difference:+.4f}",
                f"[{a.ci_low:+.4f}, {a.ci_high:+.4f}]",
                f"{a.margin:g}",
                "non-inferior" if a.p_value < alpha else "not shown",
            )
        )
    for b in decision.bootstrap:
        rows.append(
            (
                f"{b.metric} (bootstrap)",
                f"{b.champion:.4f}",
                f"{b.challenger:.4f}",
                f"{b.difference:+.4f}",
                f"[{b.ci_low:+.4f}, {b.ci_high:+.4f}]",
                f"{b.margin:g}",
                "non-inferior" if b.p_value < alpha else "not shown",
            )
        )
    return rows


def _print_outcome(outcome: PromotionOutcome) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    if outcome.outcomes is not None:
        o = outcome.outcomes
        start = f"{o.window[0]:%Y-%m-%d %H:%M}" if o.window[0] else "—"
        console.print(
            f"experiment {o.champion_version} (champion) vs {o.challenger_version} "
            f"(challenger), {start} – {o.window[1]:%Y-%m-%d %H:%M} UTC: "
            f"{o.counts['paired']:,} paired predictions, {o.counts['labelled']:,} labelled, "
            f"{o.counts['open']:,} with the horizon still open (not counted), "
            f"{o.counts['counted']:,} counted, {o.counts['churners']:,} churners"
        )
    decision = outcome.decision
    if decision is not None and decision.roc_auc is not None:
        table = Table(title=f"promotion test (alpha {decision.alpha:g}, one-sided)")
        for column in (
            "metric",
            "champion",
            "challenger",
            "difference",
            "interval",
            "margin",
            "verdict",
        ):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for row in decision_rows(decision):
            table.add_row(*row)
        console.print(table)
    if decision is not None:
        console.print(f"rule: {decision.rule}")
        for reason in decision.reasons:
            console.print(f"  {reason}")
    prefix = "dry run, nothing changed: would be " if outcome.dry_run else ""
    console.print(f"{prefix}{outcome.message}", highlight=False)


def promote_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Run the test and print it; change nothing.")
    ] = False,
    reason: Annotated[
        str | None, typer.Option(help="Why, for the audit trail (the rule is added).")
    ] = None,
) -> None:
    """Run the paired promotion test on the champion and challenger and act on it."""
    from core.registry import ModelRegistry
    from lifecycle.promote import promote

    if reason is not None and not reason.strip():
        raise typer.BadParameter("must not be empty when given", param_hint="--reason")
    with refused_exits():
        outcome = promote(
            _engine(), ModelRegistry(), datetime.now(UTC), _actor(), reason=reason, dry_run=dry_run
        )
    _print_outcome(outcome)
    raise typer.Exit(EXIT_CODES[outcome.action])


def guard_command() -> None:
    """Roll back a champion whose live figures break a bar (CHURN_PERFORMANCE_BARS)."""
    from core.registry import ModelRegistry
    from lifecycle.guard import guard

    with refused_exits(code=2):
        outcome = guard(_engine(), ModelRegistry(), datetime.now(UTC), f"{_actor()} (guard)")
    if outcome.champion is not None:
        typer.echo(f"checked champion {outcome.champion} against bars {outcome.bars}")
    if outcome.measured_at is not None:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in outcome.measured.items() if v is not None)
        typer.echo(
            f"latest performance run {outcome.measured_at:%Y-%m-%d %H:%M} UTC, "
            f"{outcome.label_count:,} labels: {shown or 'no figure claimed'}"
        )
    typer.echo(outcome.message)
