"""`loadtests/run.py` against a real service: the SLA verdict decides the exit code.

Locust runs in a subprocess, as in use: importing it here would gevent-patch the test process.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT
from launchers.server_process import start_server
from loadtests.run import service_env
from training.train import TrainingOutcome

RUN = PROJECT_ROOT / "loadtests" / "run.py"

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def service(trained: TrainingOutcome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service over the session's model, configured as `run.py` configures its own."""
    tmp = tmp_path_factory.mktemp("load-service")
    running = start_server(
        Path(os.environ["BENTOML_HOME"]), tmp / "server.log", service_env(tmp / "scratch")
    )
    yield running.url
    running.stop()


def run_load(url: str, results: Path, seconds: int, *sla: str) -> subprocess.CompletedProcess[str]:
    """`run.py --url` at 50 req/s for `seconds`, with a small customer table to start fast."""
    command = [sys.executable, str(RUN), "--url", url, "--rate", "50"]
    command += ["--duration", f"{seconds}s", "--results", str(results), *sla]
    env = {**os.environ, "LOAD_CUSTOMERS": "500"}
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def stats_row(results: Path, name: str) -> dict[str, str]:
    """The row of Locust's stats CSV for one request name."""
    with (results / "locust_stats.csv").open() as f:
        return next(row for row in csv.DictReader(f) if row["Name"] == name)


@pytest.mark.server
def test_generous_sla_passes_and_writes_reports(service: str, tmp_path: Path) -> None:
    run = run_load(service, tmp_path, 5, "--sla-p95-ms", "5000", "--sla-p99-ms", "10000")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "SLA PASS" in output
    assert "SLA FAIL" not in output
    for report in ("locust_stats.csv", "locust_stats_history.csv", "report.html"):
        assert (tmp_path / report).stat().st_size > 0, report
    single = stats_row(tmp_path, "/predict")
    assert int(single["Failure Count"]) == 0
    assert int(single["Request Count"]) >= 100, single  # about 5 s × 50 req/s were offered
    assert re.search(r"X-Cache of /predict answers: hit [1-9]", output), output  # repeats


@pytest.mark.server
def test_impossible_sla_fails_and_names_it(service: str, tmp_path: Path) -> None:
    run = run_load(service, tmp_path, 3, "--sla-p95-ms", "0.001")
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "SLA FAIL: p95 of /predict" in output
    assert "> 0.001 ms (over by" in output
    assert "SLA PASS" not in output
    assert (tmp_path / "report.html").exists()
