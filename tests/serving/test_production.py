"""Issue 4's acceptance on the service in this process as deployed, with a real PostgreSQL
and a real redis-server: cache, auth, limits, deletion, retention, labels kept through a
database outage. Its faults under load are in test_faults_under_load.py (real servers)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select, text

from core.pipeline.store import REFERENCE_FILE, load_predictor, save_predictor
from core.settings import PROJECT_ROOT
from launchers.pg_server import PostgresServer
from launchers.redis_process import RedisServer
from launchers.server_process import request_bodies
from monitoring.database import PREDICTIONS, make_engine, upgrade_schema
from monitoring.identity import customer_hash
from tests.serving.conftest import KEYS, SECRET, AppWith, deployed_settings
from tests.serving.inprocess import InProcessApp, InProcessApps, metric
from training.train import TrainingOutcome

AUTH = {"X-API-Key": KEYS[0]}


@pytest.fixture(scope="module")
def bodies(trained: TrainingOutcome) -> list[dict[str, Any]]:
    return request_bodies(trained.test_frame.iloc[:400])


@pytest.fixture(scope="module")
def deployed_env(postgres: PostgresServer, redis_server: RedisServer) -> dict[str, str]:
    """The deployed settings over a PostgreSQL database of this module's own."""
    return deployed_settings(postgres.new_database(), redis_server.url)


@pytest.fixture(scope="module")
def deployed_engine(deployed_env: dict[str, str]) -> Iterator[Engine]:
    engine = make_engine(deployed_env["DATABASE_URL"])
    # The service migrates in the background when it starts; the tests read the tables
    # before it may have finished (upgrade_schema is safe to run concurrently).
    upgrade_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def deployed_here(
    app_with: AppWith, deployed_env: dict[str, str], deployed_engine: Engine
) -> tuple[InProcessApp, Engine]:
    """The service in this process as deployed (PostgreSQL log, Redis, API keys)."""
    return app_with(**deployed_env), deployed_engine


@pytest.fixture
def keyed(app_with: AppWith) -> InProcessApp:
    """The service in this process with API keys (SQLite log, no Redis)."""
    return app_with(**deployed_settings(None, None))


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every log line of the test so far, its fixtures' included (the app's start)."""
    records = caplog.get_records("setup") + caplog.get_records("call")
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) for record in records)


def rows(engine: Engine, *where: Any) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(PREDICTIONS).where(*where)))


def test_cache_hit_miss_metric_and_log(
    deployed_here: tuple[InProcessApp, Engine], bodies: list[dict[str, Any]]
) -> None:
    app, engine = deployed_here
    # A customer of its own: the session's Redis is shared with other modules' services.
    body = {**bodies[0], "customer_id": f"CACHE-{uuid.uuid4().hex[:12]}"}
    hits_before = metric("churn_cache_requests_total", result="hit")
    first = app.post("/predict", json=body, headers=AUTH)
    second = app.post("/predict", json=body, headers=AUTH)
    changed = {**body, "monthly_charges": body["monthly_charges"] + 1.0}
    third = app.post("/predict", json=changed, headers=AUTH)
    assert [a.status_code for a in (first, second, third)] == [200, 200, 200]
    assert [a.headers["x-cache"] for a in (first, second, third)] == ["miss", "hit", "miss"]
    assert second.json()["churn_probability"] == first.json()["churn_probability"]
    assert metric("churn_cache_requests_total", result="hit") == hits_before + 1

    hashed = customer_hash(body["customer_id"], SECRET.encode())
    deadline = time.monotonic() + 30
    while rows(engine, PREDICTIONS.c.customer_hash == hashed) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    with engine.connect() as connection:
        logged = connection.execute(
            select(PREDICTIONS.c.cache, PREDICTIONS.c.request_id, PREDICTIONS.c.features)
            .where(PREDICTIONS.c.customer_hash == hashed)
            .order_by(PREDICTIONS.c.created_at)
        ).all()
    assert [r.cache for r in logged] == ["miss", "hit", "miss"]
    assert [r.request_id for r in logged] == [
        a.headers["x-request-id"] for a in (first, second, third)
    ]
    assert all("customer_id" not in r.features for r in logged)  # miss and hit paths
    assert logged[2].features["monthly_charges"] == changed["monthly_charges"]


def test_batch_rows_are_logged_without_the_customer_id(
    deployed_here: tuple[InProcessApp, Engine], bodies: list[dict[str, Any]]
) -> None:
    app, engine = deployed_here
    batch = [{**body, "customer_id": f"BATCH-{uuid.uuid4().hex[:12]}"} for body in bodies[:3]]
    answer = app.post("/predict/batch", json=batch, headers=AUTH)
    assert answer.status_code == 200, answer.text
    hashes = [customer_hash(body["customer_id"], SECRET.encode()) for body in batch]
    where = PREDICTIONS.c.customer_hash.in_(hashes)
    deadline = time.monotonic() + 30
    while rows(engine, where) < len(batch) and time.monotonic() < deadline:
        time.sleep(0.2)
    with engine.connect() as connection:
        logged = connection.execute(
            select(PREDICTIONS.c.endpoint, PREDICTIONS.c.features).where(where)
        ).all()
    assert [r.endpoint for r in logged] == ["batch"] * len(batch)
    assert all("customer_id" not in r.features for r in logged)
    assert sorted(r.features["tenure_months"] for r in logged) == sorted(
        b["tenure_months"] for b in batch
    )


def test_a_new_model_version_never_serves_an_old_entry(
    app_with: AppWith,
    in_process: InProcessApps,
    postgres: PostgresServer,
    redis: RedisServer,
    trained: TrainingOutcome,
    bodies: list[dict[str, Any]],
) -> None:
    env = deployed_settings(postgres.new_database(), redis.url)
    body = bodies[1]
    old_model = app_with(**env)
    old = [old_model.post("/predict", json=body, headers=AUTH) for _ in range(2)]
    assert [a.headers["x-cache"] for a in old] == ["miss", "hit"]

    import bentoml

    stored = load_predictor(trained.tag or "")
    reference = pd.read_parquet(stored.path / REFERENCE_FILE)
    tag = save_predictor(trained.predictor, trained.metadata, reference)
    try:
        # Started again over the same store and Redis: it finds the new latest model.
        new = app_with(fresh=True, **env).post("/predict", json=body, headers=AUTH)
    finally:
        in_process.close()
        bentoml.models.delete(tag)
    assert new.status_code == 200
    assert new.headers["x-cache"] == "miss"
    assert new.json()["model_version"] == tag.split(":")[1] != old[0].json()["model_version"]


def test_api_keys_401_403_and_open_probes(
    keyed: InProcessApp, bodies: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """(`/metrics` is open too: test_limits_service.py reads it from a keyed server.)"""
    assert keyed.post("/predict", json=bodies[0]).status_code == 401
    assert keyed.post("/predict", json=bodies[0], headers={"X-API-Key": "x"}).status_code == 403
    assert keyed.post("/predict", json=bodies[0], headers=AUTH).status_code == 200
    bearer = {"Authorization": f"Bearer {KEYS[1]}"}
    assert keyed.post("/predict", json=bodies[0], headers=bearer).status_code == 200
    assert keyed.post("/predict/batch", json=bodies[:2]).status_code == 401
    assert keyed.post("/feedback", json={}).status_code == 401
    assert keyed.delete("/customers/abc").status_code == 401
    for path in ("/health", "/livez", "/readyz", "/docs.json"):
        assert keyed.get(path).status_code == 200, path
    log = logged_text(caplog)
    assert "authentication is DISABLED" not in log
    assert not any(key in log for key in KEYS)


def test_the_1001st_request_in_a_minute_is_429_and_other_keys_are_unaffected(
    app_with: AppWith, redis: RedisServer, bodies: list[dict[str, Any]]
) -> None:
    """The default limit (1000/minute per key), counted in Redis."""
    limited = app_with(
        **deployed_settings(
            None,
            redis.url,
            CHURN_RATE_LIMIT="1000/minute",
            # Exactness is under test here, not Redis faults: a slow CI box must not push
            # the limiter into its per-worker fallback (which starts counting afresh).
            CHURN_REDIS_TIMEOUT_MS="3000",
        )
    )
    key = {"X-API-Key": KEYS[2]}
    started = time.monotonic()
    statuses = [
        limited.post("/predict", json=bodies[5], headers=key).status_code for _ in range(1000)
    ]
    refused = limited.post("/predict", json=bodies[5], headers=key)
    elapsed = time.monotonic() - started
    assert elapsed < 55, f"1,000 requests took {elapsed:.0f} s: too slow to test a minute's limit"
    assert statuses.count(200) == 1000
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"].startswith("rate limit 1000/minute exceeded; retry in ")
    other = limited.post("/predict", json=bodies[5], headers={"X-API-Key": KEYS[1]})
    assert other.status_code == 200


def test_oversized_and_pickle_bodies_are_refused(keyed: InProcessApp) -> None:
    big = keyed.post("/predict/batch", content=b"[" + b" " * 5_000_000 + b"]", headers=AUTH)
    assert big.status_code == 413
    assert big.json()["error"].startswith("body: larger than ")
    pickled = keyed.post(
        "/predict",
        content=b"\x80\x04N.",
        headers={**AUTH, "Content-Type": "application/vnd.bentoml+pickle"},
    )
    assert pickled.status_code == 415


def test_deletion_removes_every_trace_and_retention_only_old_rows(
    deployed_here: tuple[InProcessApp, Engine], bodies: list[dict[str, Any]]
) -> None:
    app, engine = deployed_here
    gone, kept = bodies[10], bodies[11]
    for body in (gone, kept):
        assert app.post("/predict", json=body, headers=AUTH).status_code == 200
        label = {"customer_id": body["customer_id"], "churned": True, "observed_date": "2026-11-01"}
        assert app.post("/feedback", json=label, headers=AUTH).status_code == 200
    answer = app.delete(f"/customers/{gone['customer_id']}", headers=AUTH)
    assert answer.status_code == 200
    deleted = answer.json()["deleted"]
    assert deleted["predictions"] >= 1 and deleted["ground_truth"] == 1
    assert deleted["cache_entries"] >= 1

    hashes = {
        b["customer_id"]: customer_hash(b["customer_id"], SECRET.encode()) for b in (gone, kept)
    }
    with engine.connect() as connection:
        for table in ("predictions", "ground_truth"):
            count = connection.scalar(
                text(f"select count(*) from {table} where customer_hash = :h"),
                {"h": hashes[gone["customer_id"]]},
            )
            assert count == 0, table
            count = connection.scalar(
                text(f"select count(*) from {table} where customer_hash = :h"),
                {"h": hashes[kept["customer_id"]]},
            )
            assert count >= 1, table
    again = app.post("/predict", json=gone, headers=AUTH)
    assert again.headers["x-cache"] == "miss", "the cache still held the deleted customer"

    # Retention: age some rows, run the command, only those go.
    with engine.begin() as connection:
        connection.execute(
            PREDICTIONS.update()
            .where(PREDICTIONS.c.customer_hash == hashes[kept["customer_id"]])
            .values(created_at=datetime.now(UTC) - timedelta(days=91))
        )
        old = connection.scalar(
            select(func.count())
            .select_from(PREDICTIONS)
            .where(PREDICTIONS.c.customer_hash == hashes[kept["customer_id"]])
        )
    others_before = rows(engine, PREDICTIONS.c.customer_hash != hashes[kept["customer_id"]])
    env = {**os.environ, "DATABASE_URL": str(engine.url.render_as_string(hide_password=False))}
    churn = Path(sys.executable).with_name("churn")
    done = subprocess.run(
        [str(churn), "retention"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert f"deleted {old:,}" in done.stdout
    others = PREDICTIONS.c.customer_hash != hashes[kept["customer_id"]]
    assert rows(engine, PREDICTIONS.c.customer_hash == hashes[kept["customer_id"]]) == 0
    assert rows(engine, others) >= others_before  # the service may still be adding rows


def test_no_log_line_holds_a_key_or_a_raw_customer_id(
    keyed: InProcessApp, caplog: pytest.LogCaptureFixture
) -> None:
    invalid = {"customer_id": "RAW-ID-4242", "tenure_months": -1}
    key = {"X-API-Key": KEYS[1]}
    for path, body in (("/predict", invalid), ("/predict/batch", [invalid])):
        answer = keyed.post(path, json=body, headers=key)
        assert answer.status_code == 422
    log = logged_text(caplog)
    assert log.count("rejected request: invalid") == 2, log
    assert "RAW-ID-4242" not in log
    assert not any(key in log for key in KEYS)


def test_labels_sent_while_postgres_is_down_are_kept_and_stored_later(
    deployed_here: tuple[InProcessApp, Engine], postgres: PostgresServer
) -> None:
    app, engine = deployed_here
    labels = [
        {"customer_id": f"LABEL-{i}", "churned": i % 2 == 0, "observed_date": "2026-10-01"}
        for i in range(5)
    ]
    postgres.stop()
    try:
        answer = app.post("/feedback", json=labels, headers=AUTH)
    finally:
        postgres.start()
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"stored": 0, "spooled": 5}
    hashes = [customer_hash(label["customer_id"], SECRET.encode()) for label in labels]
    deadline, stored = time.monotonic() + 60, 0
    while stored < 5 and time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            with engine.connect() as connection:
                stored = int(
                    connection.scalar(
                        text("select count(*) from ground_truth where customer_hash = any(:h)"),
                        {"h": hashes},
                    )
                )
        except Exception:  # PostgreSQL still starting
            stored = 0
    assert stored == 5


def test_feedback_import_command_stores_a_label_file(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.new_database()
    labels = tmp_path / "labels.csv"
    labels.write_text("customer_id,churned,observed_date\nA-1,yes,2026-09-30\nA-2,no,2026-09-30\n")
    env = {**os.environ, "DATABASE_URL": url, "CHURN_ID_HASH_SECRET": SECRET}
    churn = Path(sys.executable).with_name("churn")
    for _ in range(2):  # importing the same file twice changes nothing
        done = subprocess.run(
            [str(churn), "feedback", "import", str(labels)],
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert "stored 2 labels" in done.stdout
    engine = make_engine(url)
    with engine.connect() as connection:
        found = dict(
            connection.execute(text("select customer_hash, churned from ground_truth")).all()
        )
    engine.dispose()
    assert found == {
        customer_hash("A-1", SECRET.encode()): True,
        customer_hash("A-2", SECRET.encode()): False,
    }
