"""Issue 4's acceptance, against the real service (`bentoml serve` subprocess), a real
PostgreSQL and a real redis-server: cache, faults, auth, limits, deletion, retention."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from sqlalchemy import Engine, func, select, text

from core.pipeline.store import REFERENCE_FILE, load_predictor, save_predictor
from core.settings import PROJECT_ROOT
from launchers.pg_server import PostgresServer
from launchers.redis_process import RedisServer
from launchers.server_process import ServerProcess, request_bodies
from monitoring.database import PREDICTIONS, make_engine
from monitoring.identity import customer_hash
from tests.serving.conftest import KEYS, SECRET, serve
from tests.serving.load import Load
from training.train import TrainingOutcome

AUTH = {"X-API-Key": KEYS[0]}

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def bodies(trained: TrainingOutcome) -> list[dict[str, Any]]:
    return request_bodies(trained.test_frame.iloc[:400])


def rows(engine: Engine, *where: Any) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(PREDICTIONS).where(*where)))


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


def test_cache_hit_miss_metric_and_log(
    deployed: tuple[ServerProcess, Engine], bodies: list[dict[str, Any]]
) -> None:
    server, engine = deployed
    # A customer of its own: the session's Redis is shared with other modules' services.
    body = {**bodies[0], "customer_id": f"CACHE-{uuid.uuid4().hex[:12]}"}
    first = httpx.post(f"{server.url}/predict", json=body, headers=AUTH, timeout=30)
    second = httpx.post(f"{server.url}/predict", json=body, headers=AUTH, timeout=30)
    changed = {**body, "monthly_charges": body["monthly_charges"] + 1.0}
    third = httpx.post(f"{server.url}/predict", json=changed, headers=AUTH, timeout=30)
    assert [a.status_code for a in (first, second, third)] == [200, 200, 200]
    assert [a.headers["x-cache"] for a in (first, second, third)] == ["miss", "hit", "miss"]
    assert second.json()["churn_probability"] == first.json()["churn_probability"]

    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'churn_cache_requests_total{result="hit"}' in metrics

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
    deployed: tuple[ServerProcess, Engine], bodies: list[dict[str, Any]]
) -> None:
    server, engine = deployed
    batch = [{**body, "customer_id": f"BATCH-{uuid.uuid4().hex[:12]}"} for body in bodies[:3]]
    answer = httpx.post(f"{server.url}/predict/batch", json=batch, headers=AUTH, timeout=60)
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
    tmp_path: Path,
    postgres: PostgresServer,
    redis: RedisServer,
    trained: TrainingOutcome,
    bodies: list[dict[str, Any]],
) -> None:
    url = postgres.new_database()
    body = bodies[1]
    server = serve(tmp_path, url, redis.url, "old-model")
    try:
        old = [httpx.post(f"{server.url}/predict", json=body, headers=AUTH) for _ in range(2)]
    finally:
        server.stop()
    assert [a.headers["x-cache"] for a in old] == ["miss", "hit"]

    import bentoml

    stored = load_predictor(trained.tag or "")
    reference = pd.read_parquet(stored.path / REFERENCE_FILE)
    tag = save_predictor(trained.predictor, trained.metadata, reference)
    try:
        server = serve(tmp_path, url, redis.url, "new-model")
        try:
            new = httpx.post(f"{server.url}/predict", json=body, headers=AUTH, timeout=30)
        finally:
            server.stop()
    finally:
        bentoml.models.delete(tag)
    assert new.status_code == 200
    assert new.headers["x-cache"] == "miss"
    assert new.json()["model_version"] == tag.split(":")[1] != old[0].json()["model_version"]


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
    url = postgres.new_database()
    server = serve(tmp_path, url, redis.url, "pg-outage")
    engine = make_engine(url)
    try:
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
    finally:
        server.stop()
        engine.dispose()


def test_sigterm_during_load_finishes_in_flight_requests_and_writes_the_log(
    tmp_path: Path,
    postgres: PostgresServer,
    redis: RedisServer,
    bodies: list[dict[str, Any]],
) -> None:
    url = postgres.new_database()
    server = serve(tmp_path, url, redis.url, "sigterm")
    engine = make_engine(url)
    try:
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
    finally:
        server.stop()
        engine.dispose()


def test_api_keys_401_403_and_open_probes(
    limited: ServerProcess, bodies: list[dict[str, Any]]
) -> None:
    url = limited.url
    assert httpx.post(f"{url}/predict", json=bodies[0]).status_code == 401
    assert (
        httpx.post(f"{url}/predict", json=bodies[0], headers={"X-API-Key": "x"}).status_code == 403
    )
    assert httpx.post(f"{url}/predict/batch", json=bodies[:2]).status_code == 401
    assert httpx.post(f"{url}/feedback", json={}).status_code == 401
    assert httpx.delete(f"{url}/customers/abc").status_code == 401
    for path in ("/health", "/livez", "/readyz", "/metrics"):
        assert httpx.get(f"{url}{path}").status_code == 200, path
    log = limited.log_path.read_text()
    assert not any(key in log for key in KEYS)


def test_the_1001st_request_in_a_minute_is_429_and_other_keys_are_unaffected(
    limited: ServerProcess, bodies: list[dict[str, Any]]
) -> None:
    key = {"X-API-Key": KEYS[2]}

    async def thousand() -> list[int]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(
            base_url=limited.url, headers=key, timeout=60, limits=limits
        ) as client:
            answers = await asyncio.gather(
                *(client.post("/predict", json=bodies[5]) for _ in range(1000))
            )
        return [a.status_code for a in answers]

    started = time.monotonic()
    statuses = asyncio.run(thousand())
    refused = httpx.post(f"{limited.url}/predict", json=bodies[5], headers=key)
    elapsed = time.monotonic() - started
    assert elapsed < 55, f"1,000 requests took {elapsed:.0f} s: too slow to test a minute's limit"
    assert statuses.count(200) == 1000
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    other = httpx.post(f"{limited.url}/predict", json=bodies[5], headers={"X-API-Key": KEYS[1]})
    assert other.status_code == 200


def test_oversized_and_pickle_bodies_are_refused(limited: ServerProcess) -> None:
    big = httpx.post(
        f"{limited.url}/predict/batch", content=b"[" + b" " * 5_000_000 + b"]", headers=AUTH
    )
    assert big.status_code == 413
    pickled = httpx.post(
        f"{limited.url}/predict",
        content=b"\x80\x04N.",
        headers={**AUTH, "Content-Type": "application/vnd.bentoml+pickle"},
    )
    assert pickled.status_code == 415


def test_deletion_removes_every_trace_and_retention_only_old_rows(
    deployed: tuple[ServerProcess, Engine], bodies: list[dict[str, Any]], tmp_path: Path
) -> None:
    server, engine = deployed
    gone, kept = bodies[10], bodies[11]
    for body in (gone, kept):
        assert httpx.post(f"{server.url}/predict", json=body, headers=AUTH).status_code == 200
        label = {"customer_id": body["customer_id"], "churned": True, "observed_date": "2026-11-01"}
        assert httpx.post(f"{server.url}/feedback", json=label, headers=AUTH).status_code == 200
    answer = httpx.delete(f"{server.url}/customers/{gone['customer_id']}", headers=AUTH)
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
    again = httpx.post(f"{server.url}/predict", json=gone, headers=AUTH)
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


def test_no_log_line_holds_a_key_or_a_raw_customer_id(limited: ServerProcess) -> None:
    invalid = {"customer_id": "RAW-ID-4242", "tenure_months": -1}  # a 422 that BentoML logs
    # Not AUTH's key: the `deployed` service counts that key in the same Redis, and this
    # service's 1000/minute limit would see those requests too.
    key = {"X-API-Key": KEYS[1]}
    for path, body in (("/predict", invalid), ("/predict/batch", [invalid])):
        answer = httpx.post(f"{limited.url}{path}", json=body, headers=key)
        assert answer.status_code == 422
    deadline = time.monotonic() + 10
    log = ""
    while "rejected request" not in log and time.monotonic() < deadline:
        time.sleep(0.2)
        log = limited.log_path.read_text()
    assert "rejected request: invalid" in log
    assert "RAW-ID-4242" not in log
    assert not any(key in log for key in KEYS)


def test_labels_sent_while_postgres_is_down_are_kept_and_stored_later(
    deployed: tuple[ServerProcess, Engine], postgres: PostgresServer
) -> None:
    server, engine = deployed
    labels = [
        {"customer_id": f"LABEL-{i}", "churned": i % 2 == 0, "observed_date": "2026-10-01"}
        for i in range(5)
    ]
    postgres.stop()
    try:
        answer = httpx.post(f"{server.url}/feedback", json=labels, headers=AUTH, timeout=30)
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
