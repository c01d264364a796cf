"""A real `bentoml serve` subprocess per scenario, on a free port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from launchers.pg_server import PostgresServer
from launchers.redis_process import RedisServer
from launchers.server_process import ServerProcess, start_server
from monitoring.database import make_engine
from training.train import TrainingOutcome

KEYS = ("key-alpha-0001", "key-beta-0002", "key-gamma-0003")
"""API keys of the production-configured services."""
SECRET = "production-test-secret"
"""Their customer-id HMAC key."""


@pytest.fixture(scope="session")
def server(trained: TrainingOutcome, session_dir: Path) -> Iterator[str]:
    """The service over the model trained for this session."""
    running = start_server(Path(os.environ["BENTOML_HOME"]), session_dir / "server.log")
    yield running.url
    running.stop()


@pytest.fixture(scope="session")
def server_without_model(session_dir: Path) -> Iterator[str]:
    """The service started over an empty model store."""
    home = session_dir / "empty-bentoml-home"
    home.mkdir(exist_ok=True)
    running = start_server(home, session_dir / "server-empty.log", wait_for="/livez")
    yield running.url
    running.stop()


def serve(
    tmp: Path, database_url: str, redis_url: str | None, name: str, **env: str
) -> ServerProcess:
    """The service as deployed: PostgreSQL log, Redis cache and limits, API keys."""
    settings = {
        "DATABASE_URL": database_url,
        "CHURN_API_KEYS": ",".join(KEYS),
        "CHURN_RATE_LIMIT": "1000000/minute",
        "CHURN_ID_HASH_SECRET": SECRET,
        "CHURN_SPOOL_DIR": str(tmp / f"spool-{name}"),
        "CHURN_DATA_DIR": str(tmp),
        **({"REDIS_URL": redis_url} if redis_url else {}),
        **env,
    }
    return start_server(Path(os.environ["BENTOML_HOME"]), tmp / f"{name}.log", settings)


@pytest.fixture(scope="module")
def deployed(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
    redis_server: RedisServer,
    trained: TrainingOutcome,
) -> Iterator[tuple[ServerProcess, Engine]]:
    """One production-configured service shared by the non-destructive tests."""
    url = postgres.new_database()
    tmp = tmp_path_factory.mktemp("deployed")
    server = serve(tmp, url, redis_server.url, "deployed")
    engine = make_engine(url)
    yield server, engine
    server.stop()
    engine.dispose()


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
    redis_server: RedisServer,
    trained: TrainingOutcome,
) -> Iterator[ServerProcess]:
    """The service with the default rate limit (1000/minute per key)."""
    tmp = tmp_path_factory.mktemp("limited")
    server = serve(
        tmp,
        postgres.new_database(),
        redis_server.url,
        "limited",
        CHURN_RATE_LIMIT="1000/minute",
        # Exactness is under test here, not Redis faults: a slow CI box must not push the
        # limiter into its per-worker fallback (which starts counting afresh).
        CHURN_REDIS_TIMEOUT_MS="3000",
    )
    yield server
    server.stop()


@pytest.fixture
def anyio_backend() -> str:
    """The async tests run on asyncio (the event loop BentoML serves on)."""
    return "asyncio"
