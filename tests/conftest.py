"""Shared fixtures: an isolated BentoML home and MLflow store, and one small trained model.

The environment is set at import, before anything imports bentoml, because BentoML reads
BENTOML_HOME once per process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="churn-tests-"))
os.environ["BENTOML_HOME"] = str(_SESSION_DIR / "bentoml")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_DIR / 'mlflow.db'}"
os.environ["CHURN_REPORTS_DIR"] = str(_SESSION_DIR / "reports")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
# Services started by tests log to the session's SQLite file, not the project's data/, and
# are not rate limited (requests, failed authentications) unless a test asks for it.
os.environ["DATABASE_URL"] = f"sqlite:///{_SESSION_DIR / 'predictions.db'}"
os.environ["CHURN_DATA_DIR"] = str(_SESSION_DIR / "data")
os.environ["CHURN_SPOOL_DIR"] = str(_SESSION_DIR / "spool")
os.environ["CHURN_RATE_LIMIT"] = "100000000/minute"
os.environ["CHURN_AUTH_FAILURE_LIMIT"] = "100000000/minute"
# One worker per test service (the default is one per core): tests of a worker's own cache
# and limits must know which process answers.
os.environ["CHURN_WORKERS"] = "1"
# Test services serve the store they are given; the lifecycle tests, which exercise the
# registry's champion and challenger, set CHURN_MODEL_SOURCE=registry for their servers.
os.environ["CHURN_MODEL_SOURCE"] = "store"

from core.registry import ModelRegistry  # noqa: E402
from launchers.pg_server import PostgresServer  # noqa: E402
from launchers.redis_process import RedisServer  # noqa: E402
from training.generate import generate_customers  # noqa: E402
from training.train import TrainingOptions, TrainingOutcome, train_model  # noqa: E402

TRAINING_ROWS = 20_000
TRAINING_TRIALS = 8
TRAINING_SEARCH_ROWS = 8_000


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The session's folder (stores, databases, server logs) goes when the session ends,
    after every session fixture has stopped its server; a failed session keeps it, since
    its server logs are what explains the failure."""
    if exitstatus != 0:
        print(f"\nfailed session: its folder (server logs, stores) is kept at {_SESSION_DIR}")
        return
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def synthetic_table() -> object:
    """A synthetic customer table with known true churn probabilities."""
    return generate_customers(TRAINING_ROWS, seed=7)


@pytest.fixture(scope="session")
def trained(synthetic_table: object, session_dir: Path) -> Iterator[TrainingOutcome]:
    """One model trained on synthetic data and saved to the session's BentoML store."""
    # Searching a sample smaller than the 16,000 training rows exercises the final round.
    options = TrainingOptions(
        trials=TRAINING_TRIALS, seed=7, progress=False, search_rows=TRAINING_SEARCH_ROWS
    )
    yield train_model(synthetic_table, options, session_dir / "reports")  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session (its binary must be installed: .ci/run does)."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def _running(server: RedisServer) -> None:
    server.thaw()
    if not server.ping():
        server.restart()


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's Redis, running and empty; running again afterwards too, so a fault
    test that kills it cannot leave it dead for the services that share it."""
    _running(redis_server)
    redis_server.flushall()
    yield redis_server
    _running(redis_server)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (binaries must be installed)."""
    server = PostgresServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> str:
    """One MLflow SQLite store per test module: creating its tables takes some 5 s."""
    folder = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture
def registry(tracking_uri: str, request: pytest.FixtureRequest) -> ModelRegistry:
    """A registered model of the test's own in the module's MLflow store."""
    return ModelRegistry(tracking_uri, f"churn_{request.node.name.removeprefix('test_')[:40]}")
