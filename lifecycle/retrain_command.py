"""`churn retrain`: thin over `lifecycle.retrain.retrain` (cron / Kubernetes CronJob:
`churn retrain --if-triggered` nightly)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def retrain_command(
    months: Annotated[
        int | None, typer.Option(min=1, help="Months of labelled log (default 6).")
    ] = None,
    with_table: Annotated[
        str | None, typer.Option(help="Add the original training table (file or URL).")
    ] = None,
    if_triggered: Annotated[
        bool, typer.Option(help="Do nothing unless a retraining trigger is pending.")
    ] = False,
    challenger: Annotated[bool, typer.Option(help="Make the new model the challenger.")] = True,
    share: Annotated[
        float | None, typer.Option(min=0, max=1, help="Its share of customers (default 0.1).")
    ] = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Candidates to try.")] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "retraining",
    reports: Annotated[Path | None, typer.Option(help="Folder for plots.")] = None,
) -> None:
    """Retrain on the last months of served customers and their labels; register the model
    as the challenger, compared with the champion on the newest labelled customers."""
    from core.registry import ModelRegistry
    from core.settings import get_settings
    from lifecycle.retrain import RetrainOptions, RetrainRefused, retrain
    from monitoring.database import make_engine, upgrade_schema
    from monitoring.triggers import pending_triggers
    from training.data import load_table
    from training.train import TrainingOptions

    settings = get_settings()
    upgrade_schema(settings.database_url)
    engine = make_engine(settings.database_url)
    pending = pending_triggers(engine)
    if if_triggered and not pending:
        typer.echo("no retraining trigger pending: nothing to do")
        return
    triggered = "; ".join(f"{t.reason} ({t.model_version})" for t in pending)
    options = RetrainOptions(
        months=months or settings.retrain_months,
        with_table=load_table(with_table) if with_table else None,
        make_challenger=challenger,
        share=share,
        training=TrainingOptions.from_settings(trials=trials),
        reports_dir=reports,
        reason=f"{reason}: {triggered}" if triggered else reason,
    )
    try:
        outcome = retrain(engine, ModelRegistry(), options)
    except RetrainRefused as error:
        typer.echo(f"refused: {error}", err=True)
        raise typer.Exit(1) from error
    history = outcome.history
    typer.echo(
        f"window {history.window_start:%Y-%m-%d} … {history.window_end:%Y-%m-%d}: "
        f"{history.logged_predictions} predictions logged, {history.labelled_customers} "
        f"labelled customers ({history.churners} churners)"
    )
    typer.echo(
        f"trained on {outcome.training_rows} rows, held out the newest {outcome.holdout_rows}"
    )
    typer.echo(f"registered {outcome.tag} as version {outcome.version}")
    decision = outcome.comparison
    verdict = "would be promoted" if decision.promote else "would not be promoted"
    typer.echo(f"offline comparison on the hold-out: {decision.rule} ({verdict})")
    for line in decision.reasons:
        typer.echo(f"  {line}")
    if decision.roc_auc is not None:
        typer.echo(json.dumps({"roc_auc": decision.to_dict()["roc_auc"]}, default=str))
    if challenger:
        typer.echo(f"version {outcome.version} is the challenger")
    if outcome.triggers:
        typer.echo(f"consumed triggers {[t.id for t in outcome.triggers]}")
