"""Where MLflow keeps a run: the tracking store and, beside it, the run's artifacts.

MLflow puts the artifacts of a new experiment in `./mlruns` of whatever directory the
process happens to run in, even when the runs are recorded in a SQLite file elsewhere: the
test suite recorded its runs in a temporary store and wrote their files into the project's
own `mlruns/`. Here a SQLite store's artifacts go next to its file, so the two travel
together.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.settings import get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

SQLITE_PREFIX = "sqlite:///"


def artifact_location(tracking_uri: str) -> str | None:
    """`sqlite:///dir/mlflow.db` → `file:///dir/mlruns`; None for other stores (a file
    store keeps artifacts inside itself, an MLflow server has its own artifact root)."""
    if tracking_uri.startswith(SQLITE_PREFIX):
        database = Path(tracking_uri.removeprefix(SQLITE_PREFIX)).resolve()
        return (database.parent / "mlruns").as_uri()
    return None


def use_experiment(name: str, tracking_uri: str) -> str:
    """Point MLflow at `tracking_uri` and make `name` the active experiment, creating it with
    its artifacts beside a SQLite store; returns the experiment id. An experiment that
    already exists keeps the location it was created with."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(name) is None:
        try:
            mlflow.create_experiment(name, artifact_location=artifact_location(tracking_uri))
        except MlflowException:  # created meanwhile by another process: use theirs
            if mlflow.get_experiment_by_name(name) is None:
                raise
    return str(mlflow.set_experiment(name).experiment_id)


def registration_experiment(client: MlflowClient, tracking_uri: str) -> str:
    """The id of the training experiment (`CHURN_MLFLOW_EXPERIMENT`), created as
    `use_experiment` would, through `client` only: registering a model must not move
    MLflow's process-wide tracking URI."""
    from mlflow.exceptions import MlflowException

    name = get_settings().mlflow_experiment
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(
                client.create_experiment(name, artifact_location=artifact_location(tracking_uri))
            )
        except MlflowException:  # created meanwhile by another process: use theirs
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    return str(experiment.experiment_id)
