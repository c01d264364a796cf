"""`churn feedback import`, `churn retention`, `churn db upgrade`: the operator's side of
the prediction log and the ground-truth table, and `churn drift`. Thin: each calls one function."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.settings import get_settings

feedback_app = typer.Typer(help="Ground-truth labels for monitoring and retraining.")
db_app = typer.Typer(help="The prediction-log database (DATABASE_URL).")


@feedback_app.command("import")
def import_labels(
    file: Annotated[Path, typer.Argument(help="CSV/Parquet: customer_id, churned, observed_date")],
) -> None:
    """Store labels from a file (re-importing the same rows changes nothing)."""
    from monitoring.database import make_engine, upgrade_schema
    from monitoring.feedback import LabelFileError, read_label_file, store_labels
    from monitoring.identity import load_id_secret

    settings = get_settings()
    try:
        labels = read_label_file(file)
    except LabelFileError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    engine = make_engine(settings.database_url)
    upgrade_schema(engine)
    stored = store_labels(engine, labels, load_id_secret(settings))
    typer.echo(f"stored {stored:,} labels from {file}")


def retention(
    days: Annotated[
        int | None, typer.Option(min=1, help="Keep this many days (default: CHURN_RETENTION_DAYS).")
    ] = None,
) -> None:
    """Delete logged predictions older than the retention period (labels are kept)."""
    from monitoring.database import make_engine, upgrade_schema
    from monitoring.privacy import delete_predictions_older_than

    settings = get_settings()
    keep = days or settings.retention_days
    engine = make_engine(settings.database_url)
    upgrade_schema(engine)
    deleted = delete_predictions_older_than(engine, keep)
    typer.echo(f"deleted {deleted:,} predictions older than {keep} days")


@db_app.command("upgrade")
def upgrade() -> None:
    """Create or migrate the tables (the service also does this at start-up)."""
    from monitoring.database import make_engine, upgrade_schema

    upgrade_schema(make_engine(get_settings().database_url))
    typer.echo("database schema is up to date")


def drift(
    window: Annotated[str, typer.Option(help="Window ending now: 7d, 24h, 2w, 30m.")] = "7d",
    model: Annotated[
        str | None,
        typer.Option(help="Only the rows this model tag served (default: every version)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the HTML report and JSON summary.")
    ] = None,
) -> None:
    """PSI drift of the window's logged traffic against each serving model's reference;
    records `drift_results` rows and a retraining trigger on significant drift."""
    from rich.console import Console

    from monitoring.database import make_engine, upgrade_schema
    from monitoring.drift import run_drift
    from monitoring.drift_outputs import drift_table
    from monitoring.windows import parse_window, resolve_version

    settings = get_settings()
    try:
        span = parse_window(window)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--window") from error
    if model is not None:
        try:
            model = resolve_version(model)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--model") from error
    engine = make_engine(settings.database_url)
    upgrade_schema(engine)
    try:
        run = run_drift(engine, span, model=model, out=out or settings.reports_dir / "drift")
    finally:
        engine.dispose()
    if not run.versions:
        typer.echo(f"no predictions logged between {run.window_start:%Y-%m-%d %H:%M} and "
                   f"{run.window_end:%Y-%m-%d %H:%M} UTC")  # fmt: skip
        return
    Console(width=120).print(drift_table(run))
    for version in run.versions:
        if version.trigger_id is not None:
            names = ", ".join(c.column for c in version.significant)
            typer.echo(f"retraining trigger {version.trigger_id} recorded for "
                       f"{version.model_version}: significant drift in {names}")  # fmt: skip
    typer.echo(f"run {run.run_id}: summary {run.summary_path}")
