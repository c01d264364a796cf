"""Issue 13, points 5 and 8, against the real service (`bentoml serve`, 2 workers, PostgreSQL,
Redis): a refused request costs little whatever it holds, and a body that never finishes is
answered 408 after the configured timeout."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from launchers.pg_server import PostgresServer
from launchers.redis_process import RedisServer
from launchers.server_process import ServerProcess, request_bodies
from serving.errors import MAX_ERROR_DETAILS
from tests.serving.conftest import KEYS, serve
from training.train import TrainingOutcome

pytestmark = pytest.mark.server

AUTH = {"X-API-Key": KEYS[0], "Content-Type": "application/json"}
HUGE = b"[" + b",".join([b"1"] * 1_900_000) + b"]"
"""The issue's body: 3.8 MB, a JSON array of 1.9 M integers."""
BODY_TIMEOUT_S = 1


@pytest.fixture(scope="module")
def bounded(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
    redis_server: RedisServer,
    trained: TrainingOutcome,
) -> Iterator[ServerProcess]:
    """Two workers; the old 4 MB body limit, so the issue's 3.8 MB body gets past it."""
    tmp = tmp_path_factory.mktemp("bounded")
    server = serve(
        tmp,
        postgres.new_database(),
        redis_server.url,
        "bounded",
        CHURN_WORKERS="2",
        CHURN_MAX_BODY_BYTES="4000000",
        CHURN_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bodies(trained: TrainingOutcome) -> list[dict[str, Any]]:
    return request_bodies(trained.test_frame.iloc[:50])


@pytest.mark.parametrize("path", ["/predict/batch", "/feedback"])
def test_the_issues_huge_array_is_a_small_413_and_the_service_keeps_answering(
    bounded: ServerProcess, bodies: list[dict[str, Any]], path: str
) -> None:
    with ThreadPoolExecutor(max_workers=5) as pool:
        huge = pool.submit(
            httpx.post, f"{bounded.url}{path}", content=HUGE, headers=AUTH, timeout=120
        )
        others = [
            pool.submit(httpx.post, f"{bounded.url}/predict", json=body, headers=AUTH, timeout=120)
            for body in bodies[:8]
        ]
        answer = huge.result()
        assert [o.result().status_code for o in others] == [200] * 8
    assert answer.status_code == 413, answer.text[:300]
    assert len(answer.content) < 300
    assert "at most" in answer.json()["error"] and "1900000" in answer.json()["error"]


def test_1001_invalid_customers_or_10001_invalid_labels_are_413_unvalidated(
    bounded: ServerProcess,
) -> None:
    customers = httpx.post(
        f"{bounded.url}/predict/batch", json=[{"age": 5}] * 1001, headers=AUTH, timeout=60
    )
    assert customers.status_code == 413, customers.text[:300]
    assert customers.json()["error"] == "customers: at most 1000 per request, got 1001"
    labels = httpx.post(f"{bounded.url}/feedback", json=[{}] * 10_001, headers=AUTH, timeout=60)
    assert labels.status_code == 413, labels.text[:300]
    assert labels.json()["error"] == "labels: at most 10000 per request, got 10001"


def test_500_invalid_customers_get_a_capped_422_and_a_capped_log_line(
    bounded: ServerProcess, bodies: list[dict[str, Any]]
) -> None:
    # Two problems per customer: the first ten fill the list, the other 490 go unchecked.
    batch = [{**bodies[0], "age": 5, "unexpected": 1}] * 500
    answer = httpx.post(f"{bounded.url}/predict/batch", json=batch, headers=AUTH, timeout=60)
    assert answer.status_code == 422
    body = answer.json()
    assert len(body["detail"]) == MAX_ERROR_DETAILS
    assert {d["field"] for d in body["detail"]} == {
        f"[{i}].{f}" for i in range(10) for f in ("age", "unexpected")
    }
    assert body["unchecked"] == 490 and "490 items" in body["error"]
    assert len(answer.content) < 5000

    deadline = time.monotonic() + 30
    lines: list[str] = []
    while not lines and time.monotonic() < deadline:
        time.sleep(0.3)
        log = bounded.log_path.read_text()
        lines = [line for line in log.splitlines() if "490 customers not checked" in line]
    assert lines, "the rejection was not logged"
    assert all(len(line) < 1000 for line in lines)


def test_500_invalid_labels_get_a_capped_422(bounded: ServerProcess) -> None:
    labels = [{"customer_id": "", "churned": "maybe", "observed_date": "never"}] * 500
    answer = httpx.post(f"{bounded.url}/feedback", json=labels, headers=AUTH, timeout=60)
    assert answer.status_code == 422
    body = answer.json()
    # Three problems per label: seven labels give 21, one left out, 493 unchecked.
    assert len(body["detail"]) == MAX_ERROR_DETAILS
    assert body["truncated"] == 1 and body["unchecked"] == 493
    assert len(answer.content) < 5000


def test_an_object_too_large_to_be_valid_is_413(bounded: ServerProcess) -> None:
    customer = {f"x{i}": 0 for i in range(5000)}
    answer = httpx.post(f"{bounded.url}/predict", json=customer, headers=AUTH, timeout=60)
    assert answer.status_code == 413
    assert answer.json()["error"] == "body: an object has 5000 members, at most 100"


def unfinished_request(url: str, request_line: str) -> bytes:
    """Send headers announcing 1,000 bytes and only 10 of them; the status line answered."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=120) as connection:
        head = (
            f"{request_line} HTTP/1.1\r\nHost: {parts.netloc}\r\nX-API-Key: {KEYS[0]}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        connection.sendall(head.encode() + b'{"custome')
        answer = b""
        while b"\r\n" not in answer:
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    "request_line",
    ["POST /predict", "POST /predict/batch", "POST /feedback", "DELETE /customers/C1"],
)
def test_a_body_that_never_finishes_is_408(bounded: ServerProcess, request_line: str) -> None:
    assert unfinished_request(bounded.url, request_line) == b"HTTP/1.1 408 Request Timeout"
    # and the worker is free again
    assert httpx.get(f"{bounded.url}/readyz", timeout=60).status_code == 200


def test_bodies_are_read_whole_when_they_arrive_in_time(
    bounded: ServerProcess, bodies: list[dict[str, Any]]
) -> None:
    def slowly() -> Iterator[bytes]:
        text = httpx.Request("POST", "/", json=bodies[1]).content
        yield text[:20]
        time.sleep(0.2)
        yield text[20:]

    answer = httpx.post(f"{bounded.url}/predict", content=slowly(), headers=AUTH, timeout=60)
    assert answer.status_code == 200, answer.text
