"""`churn`: a thin command line over the training package and the service."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from batch.commands import (
    EngineOption,
    SchedulerOption,
    engine_choice,
    score_command,
    train_dask_command,
)
from core.settings import PROJECT_ROOT, get_settings, use_project_bentoml_home
from lifecycle.commands import registry_app, rollback
from lifecycle.promote_command import guard_command, promote_command
from lifecycle.retrain_command import retrain_command
from monitoring.commands import db_app, drift, feedback_app, retention

app = typer.Typer(help="Churn prediction: generate data, train, serve.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")
app.add_typer(db_app, name="db")
app.add_typer(registry_app, name="registry")
app.command(name="retrain")(retrain_command)
app.command()(retention)
app.command()(drift)
app.command("promote")(promote_command)
app.command("guard")(guard_command)
app.command()(rollback)
app.command("score")(score_command)

if TYPE_CHECKING:
    from monitoring.performance import PerformanceRun

DEMO_ROWS = 20_000
DEMO_TRIALS = 20


@app.callback()
def main() -> None:
    """Every command uses the project's BentoML store unless BENTOML_HOME is set."""
    use_project_bentoml_home()


@app.command()
def generate(
    rows: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same table.")] = 42,
    out: Annotated[Path, typer.Option(help="Output file, .csv or .parquet.")] = Path(
        "data/customers.csv"
    ),
    shift: Annotated[
        list[str] | None,
        typer.Option(help="COLUMN=SIGMAS: move a column by that many standard deviations."),
    ] = None,
) -> None:
    """Write a synthetic customer table with known churn probabilities."""
    from training.generate import bayes_optimal_auc, generate_customers, write_table

    moves: dict[str, float] = {}
    for item in shift or []:
        name, _, amount = item.partition("=")
        try:
            moves[name.strip()] = float(amount)
        except ValueError as error:
            raise typer.BadParameter(f"expected COLUMN=SIGMAS, got {item!r}") from error
    try:
        frame = generate_customers(rows, seed, moves or None)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--shift") from error
    write_table(frame, out)
    typer.echo(
        f"wrote {len(frame):,} customers to {out} "
        f"(churn rate {frame['churned'].mean():.3f}, "
        f"Bayes-optimal ROC-AUC {bayes_optimal_auc(frame):.4f})"
    )


@app.command()
def train(
    data: Annotated[str, typer.Option(help="CSV/Parquet file, or a SQLAlchemy URL.")],
    query: Annotated[str | None, typer.Option(help="SQL query, with a URL.")] = None,
    profile: Annotated[
        str | None, typer.Option(help="Data profile: a built-in name (telco) or a YAML file.")
    ] = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Candidates to try.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    balance: Annotated[
        str | None, typer.Option(help="none | weight | smote (default: none)")
    ] = None,
    linear_weight: Annotated[
        float | None, typer.Option(min=0, max=1, help="Logistic-regression share of the blend.")
    ] = None,
    search_rows: Annotated[
        int | None, typer.Option(min=1000, help="Tune on at most this many rows.")
    ] = None,
    metrics_out: Annotated[Path | None, typer.Option(help="Write held-out metrics JSON.")] = None,
    reports: Annotated[Path | None, typer.Option(help="Folder for plots.")] = None,
    register: Annotated[
        bool, typer.Option(help="Register it in the model registry (the first: champion).")
    ] = True,
    engine: EngineOption = "local",
    scheduler: SchedulerOption = None,
    on_bad_rows: Annotated[
        str,
        typer.Option(
            help="fail: refuse a table breaking a schema rule; skip: set those rows aside, "
            "report them (bad_rows.json beside --metrics-out, else in --reports) and train "
            "on the rest if enough are left."
        ),
    ] = "fail",
) -> None:
    """Tune, fit, calibrate and evaluate a model; save it to the BentoML store and register
    it (the registry's first model becomes champion; later ones wait to be promoted).
    `--engine dask` reads the table and fits the booster on a Dask cluster (batch/)."""
    from training.bad_rows import BAD_ROWS_POLICIES, report_path
    from training.train import TrainingOptions
    from training.tune import BALANCE_CHOICES

    if balance is not None and balance not in BALANCE_CHOICES:
        raise typer.BadParameter(f"--balance must be one of {', '.join(BALANCE_CHOICES)}")
    if on_bad_rows not in BAD_ROWS_POLICIES:
        raise typer.BadParameter(f"--on-bad-rows must be one of {', '.join(BAD_ROWS_POLICIES)}")
    options = TrainingOptions.from_settings(
        trials=trials,
        seed=seed,
        balance=balance,
        search_rows=search_rows,
        linear_weight=linear_weight,
        on_bad_rows=on_bad_rows,
    )
    if engine_choice(engine) == "dask":
        if query or profile or on_bad_rows != "fail":
            raise typer.BadParameter(
                "--engine dask reads a CSV/Parquet table, no profile, --on-bad-rows fail"
            )
        outcome: Any = train_dask_command(data, options, scheduler, reports)
    else:
        from training.profiles import load_profiled_table
        from training.train import train_model

        table, extras = load_profiled_table(data, query, profile)
        outcome = train_model(table, options, reports, extras, report_path(metrics_out, reports))
        if outcome.bad_rows:
            typer.echo(f"{outcome.bad_rows.summary()}: {report_path(metrics_out, reports)}")
    metrics = {k: round(v, 6) for k, v in outcome.metrics.items()}
    typer.echo(json.dumps(metrics, indent=2))
    if "bayes_optimal_auc_test" in outcome.metadata["training"]:
        optimum = outcome.metadata["training"]["bayes_optimal_auc_test"]
        typer.echo(f"Bayes-optimal ROC-AUC on the same rows: {optimum:.4f}")
    typer.echo(f"training took {outcome.metadata['training']['total_seconds']:.1f} s")
    typer.echo(f"saved {outcome.tag}")
    if register and outcome.tag:
        from lifecycle.commands import register_trained

        typer.echo(register_trained(outcome.tag))
    if metrics_out:
        metrics_out.parent.mkdir(parents=True, exist_ok=True)
        metrics_out.write_text(json.dumps(outcome.metrics, indent=2))


@app.command()
def evaluate(
    data: Annotated[str, typer.Option(help="Labelled CSV/Parquet file, or a SQLAlchemy URL.")],
    metrics_out: Annotated[Path, typer.Option(help="Write the metrics JSON here.")],
    profile: Annotated[str | None, typer.Option(help="Data profile, as for train.")] = None,
    query: Annotated[str | None, typer.Option(help="SQL query, with a URL.")] = None,
    model: Annotated[str, typer.Option(help="Model tag.")] = "churn_model:latest",
    holdout: Annotated[
        bool, typer.Option(help="Score only the rows the model's training held out.")
    ] = False,
) -> None:
    """Score a stored model on labelled data; same metric keys as training."""
    from core.pipeline.store import load_predictor
    from training.evaluate import evaluate_stored_model
    from training.profiles import load_profiled_table

    stored = load_predictor(model)
    table, _ = load_profiled_table(data, query, profile)
    report = evaluate_stored_model(stored, table, holdout)
    typer.echo(
        f"{stored.version}: " + json.dumps({k: round(v, 6) for k, v in report.metrics.items()})
    )
    metrics_out.parent.mkdir(parents=True, exist_ok=True)
    metrics_out.write_text(json.dumps(report.metrics, indent=2))


def _figure(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _print_performance(run: PerformanceRun, min_labels: int) -> None:
    """The run as the terminal shows it: a table per version, then counts and verdicts."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    span = f"{run.window_start:%Y-%m-%d %H:%M} – {run.window_end:%Y-%m-%d %H:%M}"
    console.print(f"window {span} UTC")
    if not run.versions:
        console.print("no predictions served in the window")
    for result in run.versions:
        table = Table(title=f"model {result.model_version}")
        for column in ("metric", "measured", "± SE", "estimated", "training"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for metric, measured in result.measured.items():
            training = result.training.get(metric) if result.training else None
            row = (measured, result.measured_error[metric], result.estimated[metric], training)
            table.add_row(metric, *(_figure(value) for value in row))
        console.print(table)
        console.print(
            f"{result.label_count:,} labels for {result.prediction_count:,} customers "
            f"predicted (coverage {_figure(result.label_coverage)})"
            + ("" if result.claimed else f"; below {min_labels:,} labels: not claimed")
        )
        if result.training is None:
            console.print("no training figures: the version is not in the model store")
        for found in result.degradations:
            console.print(
                f"[bold red]degraded[/]: {found.metric} {found.measured:.4f} "
                f"({found.rule} limit {found.limit:.4f})"
            )
        if result.trigger_id is not None:
            console.print(f"retraining trigger {result.trigger_id} recorded")


@app.command()
def performance(
    window: Annotated[
        str | None,
        typer.Option(help="Predictions served in the last N m|h|d|w (default: 30d, setting)."),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Only this model: a tag (churn_model:latest) or version.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for performance.json.")] = None,
) -> None:
    """Measured (against labels) and estimated (from probabilities) figures per model
    version; a degradation records a retraining trigger."""
    from monitoring.database import make_engine, upgrade_schema
    from monitoring.performance import PerformanceOptions, run_performance
    from monitoring.windows import parse_window, resolve_version

    settings = get_settings()
    try:
        span = parse_window(window) if window else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--window") from error
    try:
        version = resolve_version(model) if model else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--model") from error
    options = PerformanceOptions.from_settings(settings, span)
    engine = make_engine(settings.database_url)
    upgrade_schema(engine)
    run = run_performance(engine, options, model_version=version)
    _print_performance(run, options.min_labels)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "performance.json").write_text(json.dumps(run.to_dict(), indent=2))
        typer.echo(f"wrote {out / 'performance.json'}")


@app.command()
def monitor(
    drift_window: Annotated[str, typer.Option(help="Drift window (7d, 24h, ...).")] = "7d",
    performance_window: Annotated[
        str | None, typer.Option(help="Performance window (default: 30d, setting).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the drift report and performance.json.")
    ] = None,
) -> None:
    """Drift, then performance, once: for cron or a Kubernetes CronJob to schedule (the
    product has no scheduler of its own). Each records its results and triggers."""
    drift(window=drift_window, model=None, out=out / "drift" if out else None)
    performance(window=performance_window, model=None, out=out)


@app.command()
def models() -> None:
    """List stored churn models, newest first."""
    from core.pipeline.store import list_models

    for tag in list_models():
        typer.echo(tag)


def ensure_demo_model() -> None:
    """Train the demo model (20,000 synthetic customers) if the store has no model."""
    from core.pipeline.store import list_models

    if list_models():
        return
    demo = get_settings().data_dir / "demo_customers.csv"
    typer.echo(f"no model in {os.environ['BENTOML_HOME']}: training a demo model first")
    if not demo.exists():
        generate(rows=DEMO_ROWS, seed=42, out=demo)
    train(
        data=str(demo),
        profile=None,
        trials=DEMO_TRIALS,
        seed=None,
        balance=None,
        linear_weight=None,
        search_rows=None,
        metrics_out=None,
        reports=None,
        query=None,
        register=True,
    )


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="HTTP port.")] = 3000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
) -> None:
    """Serve `/predict`; on a fresh checkout first generate demo data and train on it."""
    ensure_demo_model()
    bentoml = Path(sys.executable).with_name("bentoml")
    command = [str(bentoml), "serve", "service:ChurnService", "--port", str(port)]
    command += ["--host", host]
    os.chdir(PROJECT_ROOT)
    os.execv(command[0], command)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def build(
    ctx: typer.Context,
    demo: Annotated[
        bool, typer.Option(help="With no model in the store, train the demo one first.")
    ] = False,
) -> None:
    """Build the Bento (service, code, churn_model:latest) into the store, with BENTOML_HOME
    made absolute and no worker count recorded: where it is served, CHURN_WORKERS or that
    machine's cores decide. Extra options go to `bentoml build`."""
    if demo:
        ensure_demo_model()
    bentoml = Path(sys.executable).with_name("bentoml")
    command = [str(bentoml), "build", *ctx.args]
    os.chdir(PROJECT_ROOT)
    os.execve(command[0], command, {**os.environ, "CHURN_BENTO_BUILD": "true"})
