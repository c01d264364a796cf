"""A customer table for the batch tests, as CSV and Parquet files, and the service in this
process to compare with."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.serving.inprocess import InProcessApps
from training.generate import generate_customers

BATCH_ROWS = 20_000


@pytest.fixture(scope="session")
def customers() -> pd.DataFrame:
    return generate_customers(BATCH_ROWS, seed=11)


@pytest.fixture(scope="session")
def table_files(
    customers: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("batch-input")
    files = {"csv": folder / "customers.csv", "parquet": folder / "customers.parquet"}
    customers.to_csv(files["csv"], index=False)
    customers.to_parquet(files["parquet"], index=False)
    return files


@pytest.fixture(scope="module")
def in_process(session_dir: Path) -> Iterator[InProcessApps]:
    apps = InProcessApps(session_dir / "batch-in-process", Path(os.environ["BENTOML_HOME"]))
    yield apps
    apps.close()
