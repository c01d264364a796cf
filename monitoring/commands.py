"""`churn feedback import`, `churn retention`, `churn db upgrade`: the operator's side of
the prediction log and the ground-truth table. Thin: each calls one function."""

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
