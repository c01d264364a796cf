"""The `churn` command line, end to end on a small table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import bentoml
import pandas as pd
from typer.testing import CliRunner

from cli import app
from training.evaluate import METRIC_NAMES

runner = CliRunner()


def test_generate_is_deterministic(tmp_path: Path) -> None:
    for name in ("a.csv", "b.csv"):
        result = runner.invoke(
            app, ["generate", "--rows", "500", "--seed", "3", "--out", str(tmp_path / name)]
        )
        assert result.exit_code == 0, result.output
        assert "Bayes-optimal ROC-AUC" in result.output
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert len(pd.read_csv(tmp_path / "a.csv")) == 500


def test_train_writes_metrics_and_saves_a_model(tmp_path: Path) -> None:
    data = tmp_path / "customers.parquet"
    assert runner.invoke(app, ["generate", "--rows", "3000", "--out", str(data)]).exit_code == 0
    metrics = tmp_path / "metrics.json"
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(data),
            "--trials",
            "2",
            "--search-rows",
            "1000",
            "--metrics-out",
            str(metrics),
            "--reports",
            str(tmp_path / "reports"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert set(json.loads(metrics.read_text())) == set(METRIC_NAMES)
    assert "saved churn_model:" in result.output
    tag = result.output.split("saved ")[1].split()[0]
    assert tag in runner.invoke(app, ["models"]).output
    # registered; the first model of a registry becomes its champion, a later one waits
    assert re.search(
        rf"registered {tag} as version \d+: (champion|it serves nothing)", result.output
    )
    bentoml.models.delete(tag)  # leave the session's store as other tests expect it


def test_train_refuses_a_bad_table_naming_the_column(tmp_path: Path) -> None:
    data = tmp_path / "bad.csv"
    frame = pd.read_csv(_generated(tmp_path))
    frame.loc[4, "age"] = 7
    frame.to_csv(data, index=False)
    result = runner.invoke(app, ["train", "--data", str(data), "--trials", "1"])
    assert result.exit_code != 0
    assert "age" in str(result.exception)


def _with_bad_rows(tmp_path: Path, rows: int) -> Path:
    """A generated table with two negative tenures and one unknown contract."""
    path = tmp_path / "bad.csv"
    assert runner.invoke(app, ["generate", "--rows", str(rows), "--out", str(path)]).exit_code == 0
    frame = pd.read_csv(path)
    frame.loc[[4, 9], "tenure_months"] = -3
    frame.loc[17, "contract"] = "Weekly"
    frame.to_csv(path, index=False)
    return path


def test_train_fails_on_bad_rows_by_default_naming_rule_count_and_examples(
    tmp_path: Path,
) -> None:
    result = runner.invoke(app, ["train", "--data", str(_with_bad_rows(tmp_path, 300))])
    assert result.exit_code != 0
    message = str(result.exception)
    assert "tenure_months: must be >= 0 — 2 bad row(s), e.g. row 4 (-3), row 9 (-3)" in message
    assert (
        "contract: must be one of" in message and "1 bad row(s), e.g. row 17 ('Weekly')" in message
    )


def test_train_skips_bad_rows_and_reports_them_beside_the_metrics(tmp_path: Path) -> None:
    metrics = tmp_path / "out" / "metrics.json"
    args = ["train", "--data", str(_with_bad_rows(tmp_path, 3000)), "--on-bad-rows", "skip"]
    args += ["--trials", "1", "--search-rows", "1000", "--metrics-out", str(metrics)]
    args += ["--reports", str(tmp_path / "reports"), "--no-register"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    bentoml.models.delete(result.output.split("saved ")[1].split()[0])
    assert "set aside 3 of 3000 row(s) breaking 2 rule(s), 2997 left" in result.output
    report = json.loads((tmp_path / "out" / "bad_rows.json").read_text())
    assert {(r["column"], r["count"]) for r in report["rules"]} == {
        ("tenure_months", 2),
        ("contract", 1),
    }
    assert report["rules"][1]["examples"][0]["row"] == 17
    quality = json.loads((tmp_path / "reports" / "data_quality.json").read_text())
    assert (quality["rows_in"], quality["bad_rows_skipped"]) == (3000, 3)


def test_train_with_a_deriving_profile_on_a_table_without_ids(tmp_path: Path) -> None:
    """Both parts of issue 18's training side at once: generated ids, a derived column,
    and a bad row set aside (its negative tenure also makes the derived total negative)."""
    data = tmp_path / "export.csv"
    assert runner.invoke(app, ["generate", "--rows", "3000", "--out", str(data)]).exit_code == 0
    frame = pd.read_csv(data).drop(columns=["customer_id", "total_charges"])
    frame.loc[4, "tenure_months"] = -3
    frame.to_csv(data, index=False)
    profile = tmp_path / "export.yaml"
    profile.write_text(
        "name: export\ngenerate_id: true\n"
        "derive: {total_charges: 'monthly_charges * tenure_months'}\n"
        "target: {column: churned, positive: 'True'}\n"
    )
    args = ["train", "--data", str(data), "--profile", str(profile), "--on-bad-rows", "skip"]
    args += ["--trials", "1", "--search-rows", "1000", "--reports", str(tmp_path / "reports")]
    result = runner.invoke(app, [*args, "--no-register"])
    assert result.exit_code == 0, result.output
    bentoml.models.delete(result.output.split("saved ")[1].split()[0])
    report = json.loads((tmp_path / "reports" / "bad_rows.json").read_text())
    assert report["rows_skipped"] == 1
    assert {r["column"] for r in report["rules"]} == {"tenure_months", "total_charges"}
    assert {r["examples"][0]["customer_id"] for r in report["rules"]} == {"row-4"}


def _generated(tmp_path: Path) -> Path:
    path = tmp_path / "ok.csv"
    runner.invoke(app, ["generate", "--rows", "300", "--out", str(path)])
    return path


def test_models_on_an_empty_store_lists_nothing(tmp_path: Path) -> None:
    """`churn serve` asks this on a fresh checkout before training the demo model."""
    import subprocess
    import sys

    churn = Path(sys.executable).with_name("churn")
    listed = subprocess.run(
        [str(churn), "models"],
        env={"BENTOML_HOME": str(tmp_path / "empty"), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == ""
