"""The service under test, at two levels: in this process (`app`, `app_with`: BentoML's
ASGI app under a TestClient, for the request path's behaviour) and as a real
`bentoml serve` subprocess per scenario, on a free port (`server`, `deployed`, `serve`: for
what only a server shows, such as workers, signals, faults across processes and
`/metrics`). A test that starts a subprocess is marked `server`; an in-process one is not."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from core.registry import ModelRegistry
from launchers.pg_server import PostgresServer
from launchers.redis_process import RedisServer
from launchers.server_process import ServerProcess, start_server
from monitoring.database import make_engine
from tests.serving.inprocess import InProcessApp, InProcessApps
from training.train import TrainingOutcome

KEYS = ("key-alpha-0001", "key-beta-0002", "key-gamma-0003")
"""API keys of the production-configured services."""
SECRET = "production-test-secret"
"""Their customer-id HMAC key."""


@pytest.fixture(scope="session")
def in_process(session_dir: Path) -> Iterator[InProcessApps]:
    """Opens the service in this process, one configuration at a time."""
    apps = InProcessApps(session_dir / "in-process", Path(os.environ["BENTOML_HOME"]))
    yield apps
    apps.close()


@pytest.fixture(scope="module", autouse=True)
def _in_process_app_closed_after_each_module(in_process: InProcessApps) -> Iterator[None]:
    """A module's in-process app (its log, Redis and database connections) does not live
    on into the next module's tests."""
    yield
    in_process.close()


@pytest.fixture
def app(in_process: InProcessApps, trained: TrainingOutcome) -> InProcessApp:
    """The service in this process over the session's model, with the session's default
    settings (no API keys) and a log of its own; consecutive tests share the instance."""
    return in_process.get()


AppWith = Callable[..., InProcessApp]


@pytest.fixture
def app_with(in_process: InProcessApps, trained: TrainingOutcome) -> AppWith:
    """`app_with(CHURN_API_KEYS=..., ...)`: the service in this process with those settings
    (environment variables) on top of the session's, in a folder of its own; `home=` serves
    another model store, `fresh=True` a new instance even if the open one has the same
    settings."""

    def opened(home: Path | None = None, fresh: bool = False, **env: str) -> InProcessApp:
        return in_process.get(env, home, fresh)

    return opened


@pytest.fixture(scope="session")
def server(trained: TrainingOutcome, session_dir: Path) -> Iterator[str]:
    """The service over the model trained for this session."""
    running = start_server(Path(os.environ["BENTOML_HOME"]), session_dir / "server.log")
    yield running.url
    running.stop()


def serve(
    tmp: Path, database_url: str, redis_url: str | None, name: str, **env: str
) -> ServerProcess:
    """The service as deployed, in a subprocess: PostgreSQL log, Redis cache and limits,
    API keys."""
    settings = {
        "CHURN_SPOOL_DIR": str(tmp / f"spool-{name}"),
        "CHURN_DATA_DIR": str(tmp),
        **deployed_settings(database_url, redis_url, **env),
    }
    return start_server(Path(os.environ["BENTOML_HOME"]), tmp / f"{name}.log", settings)


def deployed_settings(
    database_url: str | None, redis_url: str | None, **env: str
) -> dict[str, str]:
    """The deployed service's settings: API keys and the id HMAC key, a PostgreSQL log and
    Redis when given (`app_with(**deployed_settings(...))` in-process, `serve` as a server)."""
    return {
        **({"DATABASE_URL": database_url} if database_url else {}),
        "CHURN_API_KEYS": ",".join(KEYS),
        "CHURN_RATE_LIMIT": "1000000/minute",
        "CHURN_ID_HASH_SECRET": SECRET,
        **({"REDIS_URL": redis_url} if redis_url else {}),
        **env,
    }


def registry_settings(
    database_url: str,
    redis_url: str,
    registry: ModelRegistry,
    poll_s: float,
    workers: int,
    **env: str,
) -> dict[str, str]:
    """A deployed service that serves what `registry` assigns (polling every `poll_s`)."""
    return deployed_settings(
        database_url,
        redis_url,
        CHURN_MODEL_SOURCE="registry",
        MLFLOW_TRACKING_URI=registry.tracking_uri,
        CHURN_REGISTERED_MODEL=registry.name,
        CHURN_REGISTRY_POLL_S=str(poll_s),
        CHURN_WORKERS=str(workers),
        **env,
    )


@pytest.fixture(scope="module")
def deployed(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
    redis_server: RedisServer,
    trained: TrainingOutcome,
) -> Iterator[tuple[ServerProcess, Engine]]:
    """One production-configured service in a subprocess, for a module's tests."""
    url = postgres.new_database()
    tmp = tmp_path_factory.mktemp("deployed")
    server = serve(tmp, url, redis_server.url, "deployed")
    engine = make_engine(url)
    yield server, engine
    server.stop()
    engine.dispose()


@pytest.fixture
def anyio_backend() -> str:
    """The async tests run on asyncio (the event loop BentoML serves on)."""
    return "asyncio"
