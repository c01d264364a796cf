"""`churn score`: the same answer as `/predict` for every customer, whatever the engine
and the file format; a bad file is refused naming the column and the rule."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from batch.scoring import OUTPUT_META, score_table
from batch.tables import BatchInputError
from cli import app as cli
from core.registry import ModelRegistry
from tests.churn_process import run_churn
from tests.serving.inprocess import InProcessApps
from training.train import TrainingOutcome

SERVICE_ROWS = 2_000
"""Customers also sent through `/predict/batch` (two requests of 1,000)."""


def read_output(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"customer_id": str}, keep_default_na=False)
    return pd.read_parquet(path)


@pytest.fixture(scope="module")
def scored(
    trained: TrainingOutcome, table_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, pd.DataFrame]:
    """The table scored four ways: each engine from each format (into the other format),
    the CSV cut into several partitions."""
    folder = tmp_path_factory.mktemp("batch-output")
    outputs = {}
    for engine in ("local", "dask"):
        for kind, other in (("csv", "parquet"), ("parquet", "csv")):
            target = folder / f"{engine}-{kind}.{other}"
            run = score_table(
                str(table_files[kind]),
                str(target),
                engine,
                model=str(trained.tag),
                blocksize=500_000,
                progress=False,
            )
            assert run.rows == len(pd.read_parquet(table_files["parquet"]))
            if kind == "csv":
                assert run.partitions > 1
            outputs[f"{engine}-{kind}"] = read_output(target)
    return outputs


def service_answers(in_process: InProcessApps, customers: pd.DataFrame) -> pd.DataFrame:
    """The in-process service's `/predict/batch` answers for the first rows."""
    fields = customers.drop(columns=["churned", "true_churn_probability"]).head(SERVICE_ROWS)
    fields["signup_date"] = fields["signup_date"].dt.strftime("%Y-%m-%d")
    records = [
        {k: v for k, v in row.items() if v is not None}
        for row in json.loads(fields.to_json(orient="records"))
    ]
    app = in_process.get()
    answers = []
    for start in range(0, len(records), 1000):
        response = app.post("/predict/batch", json=records[start : start + 1000])
        assert response.status_code == 200, response.text
        answers += response.json()["predictions"]
    return pd.DataFrame(answers)


def test_every_engine_and_format_gives_the_same_rows(scored: dict[str, pd.DataFrame]) -> None:
    reference = scored["local-parquet"]
    assert list(reference.columns) == list(OUTPUT_META.columns)
    for name, frame in scored.items():
        assert frame["customer_id"].tolist() == reference["customer_id"].tolist(), name
        np.testing.assert_allclose(
            frame["churn_probability"], reference["churn_probability"], rtol=0, atol=1e-12
        )
        assert frame["will_churn"].tolist() == reference["will_churn"].tolist(), name
        assert frame["risk_level"].tolist() == reference["risk_level"].tolist(), name


def test_batch_scores_are_what_the_service_answers(
    scored: dict[str, pd.DataFrame], in_process: InProcessApps, customers: pd.DataFrame
) -> None:
    served = service_answers(in_process, customers)
    for name, frame in scored.items():
        head = frame.head(SERVICE_ROWS)
        assert head["customer_id"].tolist() == served["customer_id"].tolist(), name
        np.testing.assert_allclose(
            head["churn_probability"], served["churn_probability"], rtol=0, atol=1e-6
        )
        assert head["will_churn"].tolist() == served["will_churn"].tolist(), name
        assert head["risk_level"].tolist() == served["risk_level"].tolist(), name
    # the table spans every band and both decisions, so the comparison means something
    assert set(served["risk_level"]) == {"low", "medium", "high"}


@pytest.fixture
def bad_table(customers: pd.DataFrame, tmp_path: Path) -> Path:
    bad = customers.head(3_000).copy()
    bad.loc[2_500, "contract"] = "Weekly"
    bad.loc[2_600, "tenure_months"] = -3
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    return path


def test_a_bad_file_is_refused_naming_column_rule_and_customer(
    trained: TrainingOutcome, bad_table: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "score",
            "--input",
            str(bad_table),
            "--output",
            str(tmp_path / "out.csv"),
            "--model",
            str(trained.tag),
        ],
    )
    assert result.exit_code == 1
    assert "contract: must be one of ['Month-to-month', 'One year', 'Two year']" in result.output
    assert "'Weekly'" in result.output and "CUST0002501" in result.output
    assert "tenure_months: must be >= 0" in result.output


def test_a_bad_file_is_refused_by_the_cluster_too(
    trained: TrainingOutcome, bad_table: Path, tmp_path: Path
) -> None:
    with pytest.raises(BatchInputError, match=r"tenure_months: must be >= 0 .*CUST0002601"):
        score_table(
            str(bad_table),
            str(tmp_path / "out.parquet"),
            "dask",
            model=str(trained.tag),
            progress=False,
        )


def test_a_missing_column_or_file_is_named(
    trained: TrainingOutcome, customers: pd.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "no-contract.parquet"
    customers.head(100).drop(columns="contract").to_parquet(path)
    with pytest.raises(BatchInputError, match="contract: required column missing"):
        score_table(str(path), str(tmp_path / "o.csv"), model=str(trained.tag), progress=False)
    with pytest.raises(BatchInputError, match="no such file or folder"):
        score_table(str(tmp_path / "absent.csv"), str(tmp_path / "o.csv"), progress=False)


def test_without_a_model_tag_the_registrys_champion_scores(
    trained: TrainingOutcome,
    registry: ModelRegistry,
    table_files: dict[str, Path],
    scored: dict[str, pd.DataFrame],
    tmp_path: Path,
) -> None:
    """What `/predict` answers with in registry mode: a job with an empty store of its own
    scores with the champion fetched from the registry."""
    assert trained.tag is not None
    registry.set_champion(registry.register(trained.tag, "test", "day 0"), "test", "first")
    out = tmp_path / "scored.csv"
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "empty-store"),
        "CHURN_MODEL_SOURCE": "registry",
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "CHURN_REGISTERED_MODEL": registry.name,
    }
    source = str(table_files["parquet"])
    done = run_churn(env, "score", "--input", source, "--output", str(out), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"with model {trained.tag.split(':')[1]}" in done.stdout
    np.testing.assert_allclose(
        read_output(out)["churn_probability"], scored["local-csv"]["churn_probability"], atol=1e-12
    )
