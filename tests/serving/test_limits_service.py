"""Issue 13 points 2, 6 and 7 against the real service (`bentoml serve`, 2 workers) and a
real redis-server: bounded `/metrics` labels, failed authentications limited per client
address, and the rate limit's guarantee through a Redis outage and an empty restart."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redis import Redis

from launchers.pg_server import PostgresServer
from launchers.redis_process import RedisServer
from launchers.server_process import ServerProcess, request_bodies
from tests.serving.conftest import KEYS, serve
from training.train import TrainingOutcome

pytestmark = pytest.mark.server

RATE = 20
"""Requests per key per hour: an hour, so that every request of a test is in one window."""
FAILURES = 8
"""Failed authentications per address per hour."""


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this module's own: the outage test kills it."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
    own_redis: RedisServer,
    trained: TrainingOutcome,
) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("limits")
    server = serve(
        tmp,
        postgres.new_database(),
        own_redis.url,
        "limits",
        CHURN_WORKERS="2",
        CHURN_RATE_LIMIT=f"{RATE}/hour",
        CHURN_AUTH_FAILURE_LIMIT=f"{FAILURES}/hour",
        # Exactness while Redis is up is under test: a slow box must not make a healthy
        # Redis look down.
        CHURN_REDIS_TIMEOUT_MS="3000",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bodies(trained: TrainingOutcome) -> list[dict[str, Any]]:
    return request_bodies(trained.test_frame.iloc[:50])


def send(
    url: str, method: str, path: str, source: str = "127.0.0.1", **kwargs: Any
) -> httpx.Response:
    """One request on a new connection from `source` (a new connection may land on either
    worker; every 127.x address reaches the server on 127.0.0.1)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=url, transport=transport, timeout=60) as client:
        return client.request(method, path, **kwargs)


def series(metrics: str, name: str) -> list[str]:
    return [line for line in metrics.splitlines() if line.startswith(name + "{")]


def labelled(metrics: str) -> set[str]:
    """Every series with an `endpoint` label (name and labels, without the value)."""
    return {line.rsplit(" ", 1)[0] for line in metrics.splitlines() if 'endpoint="' in line}


def test_metrics_are_labelled_by_route_template_and_bounded(service: ServerProcess) -> None:
    key = {"X-API-Key": KEYS[2]}
    raw_ids = [f"RAWID{uuid.uuid4().hex[:12]}" for _ in range(3)]
    for raw_id in raw_ids:
        assert send(service.url, "DELETE", f"/customers/{raw_id}", headers=key).status_code == 200

    def unknown_paths(count: int) -> None:
        with httpx.Client(base_url=service.url, timeout=60) as client:
            for _ in range(count):
                assert client.get(f"/scan-{uuid.uuid4().hex}").status_code == 404

    unknown_paths(150)
    first = httpx.get(f"{service.url}/metrics").text
    unknown_paths(300)
    second = httpx.get(f"{service.url}/metrics").text

    name = "bentoml_service_request_total"
    assert series(first, name), f"BentoML's request metrics are still there:\n{first[:2000]}"
    for raw_id in raw_ids:
        assert raw_id not in second, "a raw customer id in /metrics"
    assert "scan-" not in second
    labels = set(re.findall(r'endpoint="([^"]*)"', second))
    assert "/customers/{customer_id}" in labels
    assert "unmatched" in labels
    assert labelled(second) == labelled(first), "300 new paths, no new series"


def test_failed_authentications_are_limited_per_address(
    service: ServerProcess, bodies: list[dict[str, Any]]
) -> None:
    guesser = "127.0.0.2"
    wrong = [
        send(service.url, "POST", "/predict", guesser, json=bodies[0], headers={"X-API-Key": k})
        for k in (f"guess-{i}" for i in range(FAILURES + 6))
    ]
    statuses = [answer.status_code for answer in wrong]
    assert statuses == [403] * FAILURES + [429] * 6, "N failures across both workers, then 429"
    assert 1 <= int(wrong[-1].headers["retry-after"]) <= 3600
    assert "failed authentications" in wrong[-1].json()["error"]

    right = {"X-API-Key": KEYS[1]}
    # A right key from the shut-out address is refused alike (or it would tell the guess was
    # right), on every worker, and so are the answers given before admission.
    for _ in range(4):
        answer = send(service.url, "POST", "/predict", guesser, json=bodies[0], headers=right)
        assert answer.status_code == 429
        assert "failed authentications" in answer.json()["error"]
    not_json = {**right, "Content-Type": "text/plain"}
    assert send(service.url, "POST", "/predict", guesser, headers=not_json).status_code == 429
    assert send(service.url, "POST", "/feedback", guesser, headers=right).status_code == 429
    missing = send(service.url, "POST", "/predict", guesser, json=bodies[0])
    assert missing.status_code == 429

    other = send(service.url, "POST", "/predict", "127.0.0.3", json=bodies[0], headers=right)
    assert other.status_code == 200, "other addresses are not affected"
    assert send(service.url, "GET", "/health", guesser).status_code == 200, "open routes stay open"
    metrics = httpx.get(f"{service.url}/metrics").text
    blocked = re.search(r"^churn_auth_blocked_total (\S+)$", metrics, re.MULTILINE)
    assert blocked is not None and float(blocked[1]) >= 13


def test_the_rate_limit_holds_through_a_redis_outage_and_an_empty_restart(
    service: ServerProcess, own_redis: RedisServer, bodies: list[dict[str, Any]]
) -> None:
    """At most RATE × workers accepted per window for one key, whatever Redis does; and
    exactly RATE while Redis is up (the old per-worker fallback started empty, and an
    emptied Redis started the window again: 60 and more here)."""
    key = {"X-API-Key": KEYS[0]}

    def burst(count: int) -> list[int]:
        return [
            send(
                service.url, "POST", "/predict", json=bodies[i % len(bodies)], headers=key
            ).status_code
            for i in range(count)
        ]

    before = burst(RATE + 5)
    assert before == [200] * RATE + [429] * 5, "exact while Redis is up"

    own_redis.kill()
    during = burst(3 * RATE)
    assert set(during) <= {200, 429}

    own_redis.start()
    # Probes that reach Redis whichever code decides: a wrong key from an ever new address
    # (its failure is recorded) and a request of another key (its window is checked). Once
    # a worker has reconnected, a few more seconds of probes (the backoff is at most 5 s)
    # bring the other one back too.
    addresses = (f"127.0.1.{i}" for i in range(1, 250))

    def probe() -> None:
        send(service.url, "POST", "/feedback", next(addresses), headers={"X-API-Key": "x"})
        send(service.url, "POST", "/predict", json=bodies[1], headers={"X-API-Key": KEYS[2]})
        time.sleep(0.2)

    deadline = time.monotonic() + 60
    while _redis_clients(own_redis) < 2:  # this check's own connection, and a worker's
        assert time.monotonic() < deadline, "the service never went back to Redis"
        probe()
    settled = time.monotonic() + 6
    while time.monotonic() < settled:
        probe()
    after = burst(3 * RATE)
    assert set(after) <= {200, 429}

    accepted = before.count(200) + during.count(200) + after.count(200)
    assert accepted <= RATE * 2, (before.count(200), during.count(200), after.count(200))


def _redis_clients(redis: RedisServer) -> int:
    client = Redis.from_url(redis.url)
    try:
        return int(client.info("clients")["connected_clients"])  # type: ignore[index]
    finally:
        client.close()
