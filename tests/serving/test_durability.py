"""Issue 13, points 10 and 11, with a real PostgreSQL: no answered prediction's row is lost
when a worker of the real service (`bentoml serve`, 2 workers) is SIGKILLed, and none is
answered while the log can store nothing (database down and spool not writable; the
service in this process)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import Engine, select

from launchers.pg_server import PostgresServer
from launchers.server_process import ServerProcess, request_bodies
from monitoring.database import PREDICTIONS, make_engine
from tests.serving.conftest import KEYS, AppWith, deployed_settings, serve
from tests.serving.inprocess import InProcessApp, metric
from tests.serving.load import IdLoad
from training.train import TrainingOutcome

AUTH = {"X-API-Key": KEYS[0]}


@pytest.fixture(scope="module")
def bodies(trained: TrainingOutcome) -> list[dict[str, Any]]:
    return request_bodies(trained.test_frame.iloc[:300])


def logged_request_ids(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(select(PREDICTIONS.c.request_id)))


def wait_until_logged(engine: Engine, wanted: set[str], timeout: float = 120.0) -> set[str]:
    """The wanted request ids still missing from the log once they all arrived or
    `timeout` passed (rows of a dead worker come back through another one's replay)."""
    deadline = time.monotonic() + timeout
    missing = set(wanted)
    while missing and time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # PostgreSQL may still be starting
            missing = wanted - logged_request_ids(engine)
        time.sleep(0.5)
    return missing


def worker_pids(server: ServerProcess) -> list[int]:
    """The `bentoml serve` process's service workers (its descendants that run the app)."""
    parent = psutil.Process(server.process.pid)
    return [
        child.pid
        for child in parent.children(recursive=True)
        if any("worker" in part for part in child.cmdline())
    ]


@pytest.mark.server
def test_sigkill_of_a_worker_under_load_loses_no_answered_prediction(
    tmp_path: Path, postgres: PostgresServer, bodies: list[dict[str, Any]]
) -> None:
    url = postgres.new_database()
    server = serve(tmp_path, url, None, "sigkill", CHURN_WORKERS="2")
    engine = make_engine(url)
    try:
        deadline = time.monotonic() + 60
        while len(worker_pids(server)) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        workers = worker_pids(server)
        assert len(workers) == 2, workers
        with IdLoad(server.url, bodies, clients=32, seconds=20, headers=AUTH) as load:
            time.sleep(8)
            os.kill(workers[0], signal.SIGKILL)
        assert not psutil.pid_exists(workers[0]) or psutil.Process(workers[0]).status() == (
            psutil.STATUS_ZOMBIE
        )
        answered = set(load.answered.get(200, []))
        assert len(answered) > 100, {s: len(ids) for s, ids in load.answered.items()}
        missing = wait_until_logged(engine, answered)
        assert not missing, f"{len(missing)} of {len(answered)} answered predictions not logged"
    finally:
        server.stop()
        engine.dispose()


def wait_for_status(app: InProcessApp, path: str, status: int, timeout: float = 60.0) -> int:
    deadline, seen = time.monotonic() + timeout, -1
    while time.monotonic() < deadline:
        seen = app.get(path).status_code
        if seen == status:
            return seen
        time.sleep(0.5)
    return seen


def test_database_down_and_spool_unwritable_answers_503_until_either_returns(
    app_with: AppWith, postgres: PostgresServer, bodies: list[dict[str, Any]]
) -> None:
    url = postgres.new_database()
    app = app_with(**deployed_settings(url, None))
    spool = Path(app.env["CHURN_SPOOL_DIR"])
    moved = app.folder / "spool-moved-away"
    engine = make_engine(url)
    answered: list[str] = []
    lost_before = metric("churn_prediction_log_rows_total", outcome="lost")

    def predict(body: dict[str, Any], request_id: str) -> httpx.Response:
        answer = app.post("/predict", json=body, headers={**AUTH, "X-Request-ID": request_id})
        if answer.status_code == 200:
            answered.append(request_id)
        return answer

    try:
        assert predict(bodies[0], "before-outage").status_code == 200
        postgres.stop()
        # Root ignores file modes, so chmod cannot stop it: a regular file where the
        # folder should be does (mkdir and every create under it fail, for root too).
        spool.rename(moved)
        spool.write_text("not a folder")
        try:
            assert wait_for_status(app, "/readyz", 503) == 503
            refused = predict(bodies[1], "during-outage")
            assert refused.status_code == 503, refused.text
            assert "spool not writable" in refused.json()["error"]
            assert refused.headers["x-request-id"] == "during-outage"
            batch = app.post("/predict/batch", json=bodies[2:4], headers=AUTH)
            assert batch.status_code == 503, batch.text
            label = {"customer_id": "CUST-1", "churned": True, "observed_date": "2026-11-01"}
            feedback = app.post("/feedback", json=label, headers=AUTH)
            assert feedback.status_code == 503, feedback.text
            assert "spool not writable" in feedback.json()["error"]
            assert metric("churn_prediction_log_rows_total", outcome="lost") == lost_before
        finally:
            spool.unlink()
            moved.rename(spool)
        # The spool is back (the database is not): rows can be kept again.
        assert wait_for_status(app, "/readyz", 200) == 200
        assert predict(bodies[5], "spool-back").status_code == 200
        postgres.start()
        assert predict(bodies[6], "database-back").status_code == 200
        missing = wait_until_logged(engine, set(answered))
        assert not missing, missing
        assert "during-outage" not in logged_request_ids(engine)
    finally:
        postgres.start()
        engine.dispose()
