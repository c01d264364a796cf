"""`churn train --engine dask` on a LocalCluster saves a model the service loads and
serves, in a store of its own (a subprocess with its own BENTOML_HOME)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import yaml

from core.pipeline.encode import encode_frame
from core.pipeline.store import stored_predictor
from tests.churn_process import run_churn
from tests.serving.inprocess import InProcessApps
from training.data import split_holdout, validate_table

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_a_dask_trained_model_is_served(
    table_files: dict[str, Path],
    customers: pd.DataFrame,
    tmp_path: Path,
    in_process: InProcessApps,
) -> None:
    home = tmp_path / "bentoml"
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "CHURN_REPORTS_DIR": str(tmp_path / "reports"),
    }
    train = ["train", "--engine", "dask", "--data", str(table_files["csv"])]
    options = ["--trials", "3", "--search-rows", "3000", "--no-register"]
    result = run_churn(env, *train, *options, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fitting the booster" in result.stdout
    [folder] = (home / "models" / "churn_model").glob("*/")
    stored = stored_predictor(folder, folder.name)  # checksums verified, as serving does
    training = stored.metadata["training"]
    assert training["engine"] == "dask" and training["workers"] == 2
    _, test_idx = split_holdout(customers["churned"].to_numpy(), 0.2, training["seed"])
    assert training["test_rows"] == len(test_idx)
    assert stored.metadata["metrics"]["roc_auc"] > 0.75

    app = in_process.get(home=home)  # the service over the dask-trained store
    health = app.get("/health").json()
    assert health["model_loaded"] and health["model_version"] == folder.name
    row = customers.drop(columns=["churned", "true_churn_probability"]).iloc[0]
    request = {k: v for k, v in row.items() if pd.notna(v)}
    request["signup_date"] = request["signup_date"].strftime("%Y-%m-%d")
    request = {k: (v.item() if hasattr(v, "item") else v) for k, v in request.items()}
    answer = app.post("/predict", json=request)
    assert answer.status_code == 200, answer.text
    typed = validate_table(customers.head(1), require_target=False)
    expected = stored.predictor.predict_proba(encode_frame(typed))[0]
    assert abs(answer.json()["churn_probability"] - expected) < 1e-6
    assert yaml.safe_load((folder / "metadata.yaml").read_text())["model_version"] == folder.name
