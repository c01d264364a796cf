"""`churn score` and the Dask engine of `churn train`, as typer commands for cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from batch.cluster import ENGINES, Engine
from batch.tables import DEFAULT_BLOCKSIZE, BatchInputError
from core.settings import MODEL_NAME

if TYPE_CHECKING:
    from batch.training import DaskTrainingRun
    from training.train import TrainingOptions

EngineOption = Annotated[
    str, typer.Option(help="local: this process, one partition at a time; dask: a cluster.")
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        help="Scheduler address of an existing Dask cluster (tcp://host:8786); "
        "without it --engine dask starts a 2-process LocalCluster here."
    ),
]


def engine_choice(engine: str) -> Engine:
    """The engine named on the command line, or a usage error."""
    for known in ENGINES:
        if engine == known:
            return known
    raise typer.BadParameter(f"must be one of {', '.join(ENGINES)}", param_hint="--engine")


def score_command(
    input: Annotated[str, typer.Option("--input", help="CSV/Parquet file, folder or glob.")],
    output: Annotated[
        str, typer.Option(help="A .csv file, or a .parquet file or folder name (part files).")
    ],
    engine: EngineOption = "local",
    scheduler: SchedulerOption = None,
    model: Annotated[
        str | None,
        typer.Option(
            help=f"A stored model tag ({MODEL_NAME}:<version>); default: the registry's "
            "champion (CHURN_MODEL_SOURCE=registry), else the store's latest."
        ),
    ] = None,
    blocksize: Annotated[
        int, typer.Option(min=2**16, help="Bytes of CSV per partition.")
    ] = DEFAULT_BLOCKSIZE,
) -> None:
    """Score a customer table with a stored model, as /predict would, partition by
    partition: customer_id, churn_probability, will_churn, risk_level."""
    from bentoml.exceptions import NotFound

    from batch.scoring import score_table
    from core.pipeline.integrity import ModelIntegrityError

    chosen = engine_choice(engine)
    try:
        run = score_table(input, output, chosen, scheduler, model, blocksize)
    except (BatchInputError, NotFound, ModelIntegrityError) as error:
        typer.echo(f"churn score: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"scored {run.rows:,} customers in {run.partitions} partition(s) with model "
        f"{run.model_version} in {run.seconds:.1f} s ({run.rows_per_second:,.0f} rows/s) "
        f"→ {output}"
    )


def train_dask_command(
    data: str, options: TrainingOptions, scheduler: str | None, reports: Path | None
) -> DaskTrainingRun:
    """`churn train --engine dask`: the cluster of `scheduler` (or a LocalCluster)."""
    from batch.cluster import dask_client
    from batch.training import train_on_dask

    try:
        with dask_client(scheduler) as client:
            return train_on_dask(data, options, client, reports, say=typer.echo)
    except BatchInputError as error:
        typer.echo(f"churn train: {error}", err=True)
        raise typer.Exit(1) from None
