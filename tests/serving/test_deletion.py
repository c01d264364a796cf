"""Issue 13, points 1, 3 and 9: a deletion is complete when it answers, in every worker
(the real service with 2 workers, a real PostgreSQL and, or without, a real redis-server);
Redis never holds a raw customer id, and unprintable ids are refused on every route (the
service in this process, with the real redis-server)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis as redis_sync
from sqlalchemy import Engine, select

from launchers.pg_server import PostgresServer
from launchers.redis_process import RedisServer
from launchers.server_process import ServerProcess, request_bodies
from monitoring.database import PREDICTIONS, make_engine
from monitoring.identity import customer_hash
from tests.serving.conftest import KEYS, SECRET, AppWith, deployed_settings, serve
from tests.serving.inprocess import InProcessApp
from training.train import TrainingOutcome

AUTH = {"X-API-Key": KEYS[0]}
FLUSH_MS = 5000
"""The workers' log flush interval: rows sit in a worker's memory this long, so the other
worker's rows of a customer are still on their way when the deletion answers."""


@pytest.fixture(scope="module")
def bodies(trained: TrainingOutcome) -> list[dict[str, Any]]:
    return request_bodies(trained.test_frame.iloc[:20])


def start(
    tmp: Path, postgres: PostgresServer, redis_url: str | None, name: str
) -> tuple[ServerProcess, Engine]:
    url = postgres.new_database()
    server = serve(
        tmp,
        url,
        redis_url,
        name,
        CHURN_WORKERS="2",
        CHURN_LOG_FLUSH_MS=str(FLUSH_MS),
        CHURN_REDIS_TIMEOUT_MS="3000",  # Redis faults are not under test here
    )
    return server, make_engine(url)


@pytest.fixture(scope="module")
def with_redis(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
    redis_server: RedisServer,
    trained: TrainingOutcome,
) -> Iterator[tuple[ServerProcess, Engine]]:
    """2 workers sharing PostgreSQL and Redis."""
    server, engine = start(tmp_path_factory.mktemp("del-redis"), postgres, redis_server.url, "r")
    yield server, engine
    server.stop()
    engine.dispose()


@pytest.fixture
def without_redis(
    tmp_path: Path, postgres: PostgresServer, trained: TrainingOutcome
) -> Iterator[tuple[ServerProcess, Engine]]:
    """2 workers on one host, each with its own in-process cache (no REDIS_URL)."""
    server, engine = start(tmp_path, postgres, None, "local")
    yield server, engine
    server.stop()
    engine.dispose()


async def predict_many(url: str, body: dict[str, Any], count: int) -> list[httpx.Response]:
    """`count` concurrent /predict calls, each on its own connection (so both workers
    get some: the kernel hands each new connection to one of them)."""

    async def one() -> httpx.Response:
        async with httpx.AsyncClient(timeout=60) as client:
            return await client.post(f"{url}/predict", json=body, headers=AUTH)

    return list(await asyncio.gather(*(one() for _ in range(count))))


def predict_once(url: str, body: dict[str, Any]) -> httpx.Response:
    """A /predict on a new connection."""
    answer = httpx.post(f"{url}/predict", json=body, headers=AUTH, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer


def rows_of(engine: Engine, customer_id: str) -> list[datetime]:
    hashed = customer_hash(customer_id, SECRET.encode())
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(PREDICTIONS.c.created_at).where(PREDICTIONS.c.customer_hash == hashed)
            ).scalars()
        )


def settled_rows(engine: Engine, customer_id: str, expected: int) -> list[datetime]:
    """The customer's rows once every worker has flushed (waits for `expected`, then past
    one more flush interval, so late rows had every chance to land)."""
    deadline = time.monotonic() + 90
    while len(rows_of(engine, customer_id)) < expected and time.monotonic() < deadline:
        time.sleep(0.25)
    time.sleep(FLUSH_MS / 1000 + 3)
    return rows_of(engine, customer_id)


def deletion_is_complete(
    server: ServerProcess, engine: Engine, body: dict[str, Any], caches: int
) -> None:
    """Both workers serve (and, without Redis, cache) the customer, rows are still in the
    workers' memory, DELETE: every later /predict is a miss and no earlier row survives.
    `caches`: how many caches hold the customer (1 shared, or one per worker)."""
    customer_id = body["customer_id"]
    misses = 0
    for _ in range(200):  # until every cache has answered the customer once
        misses += predict_once(server.url, body).headers["x-cache"] == "miss"
        if misses >= caches:
            break
    assert misses == caches, "sequential requests: one miss per cache"
    burst = asyncio.run(predict_many(server.url, body, 16))  # rows buffered in both workers
    assert {a.status_code for a in burst} == {200}
    assert "hit" in {a.headers["x-cache"] for a in burst}

    asked_at = datetime.now(UTC)
    answer = httpx.delete(f"{server.url}/customers/{customer_id}", headers=AUTH, timeout=60)
    assert answer.status_code == 200, answer.text
    # Counts of what was in the database then (the other worker's rows were not yet).
    assert set(answer.json()["deleted"]) == {"predictions", "ground_truth", "cache_entries"}

    after = asyncio.run(predict_many(server.url, body, 24))
    after += [predict_once(server.url, body) for _ in range(16)]
    assert [a.status_code for a in after] == [200] * len(after)
    seen = Counter(a.headers["x-cache"] for a in after)
    assert seen == {"miss": len(after)}, f"a cache entry answered after the deletion: {seen}"
    assert {a.json()["customer_id"] for a in after} == {customer_id}

    left = settled_rows(engine, customer_id, len(after))
    before = [created for created in left if created < asked_at]
    assert before == [], f"{len(before)} rows logged before the deletion survived it"
    assert len(left) == len(after), "the customer's new predictions are logged as usual"


@pytest.mark.server
def test_deletion_reaches_every_worker_and_late_rows_with_redis(
    with_redis: tuple[ServerProcess, Engine], bodies: list[dict[str, Any]]
) -> None:
    server, engine = with_redis
    deletion_is_complete(server, engine, {**bodies[0], "customer_id": "DELETE-ME-REDIS"}, 1)


@pytest.mark.server
def test_deletion_reaches_every_worker_and_late_rows_without_redis(
    without_redis: tuple[ServerProcess, Engine], bodies: list[dict[str, Any]]
) -> None:
    server, engine = without_redis
    deletion_is_complete(server, engine, {**bodies[1], "customer_id": "DELETE-ME-LOCAL"}, 2)


@pytest.fixture
def with_redis_here(app_with: AppWith, redis_server: RedisServer) -> InProcessApp:
    """The service in this process as deployed, sharing the session's Redis."""
    return app_with(**deployed_settings(None, redis_server.url))


def test_redis_holds_no_raw_customer_id(
    with_redis_here: InProcessApp,
    bodies: list[dict[str, Any]],
    redis_server: RedisServer,
) -> None:
    """Every key and every value in Redis, after misses and hits of several customers."""
    app = with_redis_here

    def predict(body: dict[str, Any]) -> httpx.Response:
        answer = app.post("/predict", json=body, headers=AUTH)
        assert answer.status_code == 200, answer.text
        return answer

    customers = [{**b, "customer_id": f"RAWID-{i:04d}-X"} for i, b in enumerate(bodies[2:8])]
    for body in customers:
        first, second = predict(body), predict(body)
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
        assert second.json()["customer_id"] == body["customer_id"], "a hit names its customer"
        assert second.json()["churn_probability"] == first.json()["churn_probability"]
    stored = b""
    client = redis_sync.Redis.from_url(redis_server.url)
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            value = client.get(key) or b""
        elif kind == b"set":
            value = b"|".join(client.smembers(key))  # type: ignore[arg-type]
        elif kind == b"zset":
            value = b"|".join(client.zrange(key, 0, -1))  # type: ignore[arg-type]
        else:
            value = repr(client.dump(key)).encode()
        stored += key + b"=" + value + b"\n"
    client.close()
    assert b"churn:pred:" in stored, "the answers are in Redis"
    assert b"RAWID-" not in stored


UNPRINTABLE = {
    "zero-width space only": "\u200b",
    "byte-order mark only": "\ufeff",
    "only invisible characters": "\u200b\ufeff",
    "right-to-left override": "CUST\u202e1",
    "C1 control": "CUST\u00851",
}


@pytest.mark.parametrize("customer_id", list(UNPRINTABLE.values()), ids=list(UNPRINTABLE))
def test_unprintable_ids_are_refused_on_every_route(
    with_redis_here: InProcessApp, bodies: list[dict[str, Any]], customer_id: str
) -> None:
    app = with_redis_here
    body = {**bodies[9], "customer_id": customer_id}
    label = {"customer_id": customer_id, "churned": True, "observed_date": "2026-11-01"}
    answers = {
        "predict": app.post("/predict", json=body, headers=AUTH),
        "batch": app.post("/predict/batch", json=[body], headers=AUTH),
        "feedback": app.post("/feedback", json=label, headers=AUTH),
        "delete": app.delete(f"/customers/{quote(customer_id, safe='')}", headers=AUTH),
    }
    for route, answer in answers.items():
        assert answer.status_code == 422, (route, answer.status_code, answer.text)
        (detail,) = answer.json()["detail"]
        assert detail["field"].endswith("customer_id"), (route, detail)
        assert detail["rule"] == "printable_id", (route, detail)
