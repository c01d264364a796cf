"""Issue 4's faults under load, against the real service (`bentoml serve` subprocess), a
real PostgreSQL and a real redis-server: Redis killed, PostgreSQL stopped, SIGTERM; no
answer lost, every answer logged once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from launchers.pg_server import PostgresServer
from launchers.redis_process import RedisServer
from launchers.server_process import ServerProcess, request_bodies
from monitoring.database import PREDICTIONS, make_engine
from tests.serving.conftest import KEYS, serve
from tests.serving.load import Load
from training.train import TrainingOutcome

AUTH = {"X-API-Key": KEYS[0]}

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def bodies(trained: TrainingOutcome) -> list[dict[str, Any]]:
    return request_bodies(trained.test_frame.iloc[:400])


@contextmanager
def served_over_postgres(
    tmp_path: Path, postgres: PostgresServer, redis: RedisServer, name: str
) -> Iterator[tuple[ServerProcess, Engine]]:
    """A deployed service over a PostgreSQL database of its own, and an engine on it."""
    url = postgres.new_database()
    server = serve(tmp_path, url, redis.url, name)
    engine = make_engine(url)
    try:
        yield server, engine
    finally:
        server.stop()
        engine.dispose()


def rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(PREDICTIONS)))


def wait_for_rows(engine: Engine, expected: int, timeout: float = 60.0) -> int:
    """Poll until the log has written `expected` rows (or the deadline passes)."""
    deadline = time.monotonic() + timeout
    found = -1
    while time.monotonic() < deadline:
        try:
            found = rows(engine)
        except Exception:  # the database may still be starting
            found = -1
        if found >= expected:
            time.sleep(1.0)  # and nothing more arrives
            return rows(engine)
        time.sleep(0.25)
    return found


def test_redis_killed_during_load_loses_no_prediction_and_hits_resume(
    deployed: tuple[ServerProcess, Engine],
    redis_server: RedisServer,
    bodies: list[dict[str, Any]],
) -> None:
    server, _ = deployed
    with Load(server.url, bodies[:40], clients=32, seconds=30, headers=AUTH) as load:
        time.sleep(8)
        redis_server.kill()
        killed_at = load.elapsed()
        time.sleep(8)
        redis_server.start()
        restarted_at = load.elapsed()
    result = load.result
    assert result.failed == 0, (result.statuses, result.errors)
    assert result.ok > 1000
    during = [c for t, _, c in result.timeline if killed_at + 1 < t < restarted_at]
    after = [c for t, _, c in result.timeline if t > restarted_at + 3]
    assert during and "hit" not in during, "Redis was down: nothing can have been a hit"
    assert after.count("hit") > len(after) / 2, "hits did not resume after Redis came back"
    assert "churn_redis_errors_total" in httpx.get(f"{server.url}/metrics").text


def test_postgres_stopped_during_load_every_answer_is_logged_exactly_once(
    tmp_path: Path,
    postgres: PostgresServer,
    redis: RedisServer,
    bodies: list[dict[str, Any]],
) -> None:
    with served_over_postgres(tmp_path, postgres, redis, "pg-outage") as (server, engine):
        with Load(server.url, bodies, clients=32, seconds=30, headers=AUTH) as load:
            time.sleep(8)
            postgres.stop()
            time.sleep(10)
            postgres.start()
        result = load.result
        assert result.failed == 0, (result.statuses, result.errors)
        logged = wait_for_rows(engine, result.ok)
        assert logged == result.ok
        with engine.connect() as connection:
            distinct = connection.scalar(select(func.count(func.distinct(PREDICTIONS.c.id))))
        assert distinct == logged


def test_sigterm_during_load_finishes_in_flight_requests_and_writes_the_log(
    tmp_path: Path,
    postgres: PostgresServer,
    redis: RedisServer,
    bodies: list[dict[str, Any]],
) -> None:
    with served_over_postgres(tmp_path, postgres, redis, "sigterm") as (server, engine):
        with Load(server.url, bodies, clients=32, seconds=12, headers=AUTH) as load:
            time.sleep(5)
            sent_term_at = load.elapsed()
            server.process.terminate()
            server.process.wait(timeout=60)
        result = load.result
        before = [status for t, status, _ in result.timeline if t < sent_term_at]
        assert before and set(before) == {200}
        assert not [s for s in result.statuses if s >= 500], result.statuses
        assert result.ok > 0
        assert rows(engine) == result.ok  # written before the process exited
