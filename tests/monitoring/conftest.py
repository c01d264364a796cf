"""Fixtures for the monitoring tests: the same behaviour on SQLite and real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from launchers.pg_server import PostgresServer
from monitoring.database import PREDICTIONS, make_engine, upgrade_schema
from monitoring.identity import customer_hash
from monitoring.prediction_log import PredictionRecord

SECRET = b"test-secret-0123456789abcdef0123456789"


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server (dropped afterwards)."""
    postgres.start()  # in case a failed fault test left it stopped
    url = postgres.new_database()
    name = make_url(url).database
    yield url
    postgres.start()
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """An empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db/predictions.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a migrated database."""
    engine = make_engine(database_url)
    upgrade_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def secret() -> bytes:
    return SECRET


@pytest.fixture
def make_record() -> Callable[..., PredictionRecord]:
    """Build a record for a customer id (hashed here, as the service does)."""

    def make(customer_id: str = "CUST-0001", **overrides: Any) -> PredictionRecord:
        values: dict[str, Any] = {
            "request_id": "req-1",
            "customer_hash": customer_hash(customer_id, SECRET),
            "model_version": "churn_model:test",
            "features": {"tenure_months": 3, "contract": "Month-to-month"},
            "churn_probability": 0.72,
            "will_churn": True,
            "risk_level": "high",
            "latency_ms": 2.5,
            "cache": "miss",
            "endpoint": "predict",
        }
        values.update(overrides)
        return PredictionRecord(**values)

    return make


def count_rows(engine: Engine, table: Any = PREDICTIONS) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.fixture
def count() -> Callable[..., int]:
    """count(engine, table=predictions): rows in a table."""
    return count_rows


def poll(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Wait for a condition with a deadline (the deadline is generous, never asserted)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def wait_for() -> Callable[..., None]:
    """wait_for(predicate, timeout=20, what=...): poll until true or fail."""
    return poll
