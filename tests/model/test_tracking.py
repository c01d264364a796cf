"""MLflow runs recorded by training keep their artifacts beside their tracking store
(issue 13, point 18: the suite wrote into the project's own `mlruns/`)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from core.settings import PROJECT_ROOT
from training.train import TrainingOutcome


def test_the_suites_run_keeps_its_artifacts_in_the_session_folder(
    trained: TrainingOutcome, session_dir: Path
) -> None:
    import mlflow

    run_id = trained.metadata["mlflow_run_id"]
    run = mlflow.get_run(run_id)
    artifacts = Path(urlparse(run.info.artifact_uri).path)
    assert artifacts.is_relative_to(session_dir), run.info.artifact_uri
    logged = {p.name for p in artifacts.rglob("*") if p.is_file()}
    assert {"model.json", "metrics.json"} <= logged, logged
    project_runs = PROJECT_ROOT / "mlruns"
    assert not project_runs.exists() or not list(project_runs.rglob(run_id))
