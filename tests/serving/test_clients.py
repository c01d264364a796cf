"""BentoML's own clients against a running `bentoml serve` (issue 14, acceptance point 3).

`bentoml.SyncHTTPClient` and `bentoml.AsyncHTTPClient` discover the endpoints from
`/schema.json` and send JSON; the API's parameters are the fields of one customer
(`/predict`), `customers` (`/predict/batch`) and the fields of one label (`/feedback`), so
a caller writes `c.predict(**customer)` as BentoML's documentation shows. Their answers
must be the plain HTTP API's, their refusals the client's exception carrying the status,
and what they have scored must be in the prediction log like any other request.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import bentoml
import httpx
import pytest
from bentoml.exceptions import BentoMLException, UnprocessableEntity
from sqlalchemy import Engine, func, select

from core.schema import CustomerData, Prediction
from launchers.server_process import ServerProcess, request_bodies
from monitoring.database import GROUND_TRUTH, PREDICTIONS, make_engine
from monitoring.identity import KEY_FILE_NAME, customer_hash, load_or_create_key
from tests.serving.conftest import KEYS, SECRET
from training.train import TrainingOutcome

pytestmark = pytest.mark.server

ENDPOINTS = {"predict", "predict_batch", "feedback"}
SAME_ANSWER = ("customer_id", "will_churn", "risk_level", "recommendation", "model_version")
"""What two answers for one customer share exactly (besides probability and reasons)."""
OBSERVED = date(2026, 11, 1).isoformat()
"""A label's date as the client must send it: BentoML's JSON encoder takes no `date`."""


@pytest.fixture(scope="module")
def customers(trained: TrainingOutcome) -> list[dict[str, Any]]:
    """Customers of this module alone: ids no other test (nor the cache) has seen."""
    run = uuid.uuid4().hex[:8]
    bodies = request_bodies(trained.test_frame.iloc[:45])
    return [{**body, "customer_id": f"CLIENT-{run}-{i}"} for i, body in enumerate(bodies)]


@pytest.fixture(scope="module")
def log() -> Iterator[Engine]:
    """The prediction log of the `server` fixture: the session's DATABASE_URL."""
    engine = make_engine(os.environ["DATABASE_URL"])
    yield engine
    engine.dispose()


def id_secret() -> bytes:
    """The default server's HMAC key for customer ids (the data folder's key file)."""
    return load_or_create_key(Path(os.environ["CHURN_DATA_DIR"]) / KEY_FILE_NAME)


class RequestIds:
    """The `X-Request-ID` of every answer a client received, read from its httpx client:
    the id under which the service logged the answer's rows."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, str]] = []
        """(path, status, request id) per answer, in the order they arrived."""

    def note(self, response: httpx.Response) -> None:
        if "x-request-id" in response.headers:
            answer = (response.url.path, response.status_code, response.headers["x-request-id"])
            self.seen.append(answer)

    async def note_async(self, response: httpx.Response) -> None:
        self.note(response)

    def of(self, path: str, status: int = 200) -> list[str]:
        return [rid for p, s, rid in self.seen if (p, s) == (path, status)]

    def refused(self) -> list[str]:
        return [rid for _, status, rid in self.seen if status >= 400]


def sync_client(url: str, ids: RequestIds) -> bentoml.SyncHTTPClient:
    client = bentoml.SyncHTTPClient(url, timeout=60)
    client.client.event_hooks["response"].append(ids.note)
    return client


def http_batch(url: str, customers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The plain HTTP answers for these customers (`/predict/batch` never uses the cache,
    so the comparison is with a fresh scoring, not with the client's own answer)."""
    answer = httpx.post(f"{url}/predict/batch", json=customers, timeout=60)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["predictions"])


def same(answers: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """The same customers, decisions, levels and reasons, and the same probabilities to
    1e-12: requests merged into different batches may differ in the last bits (a vectorised
    pass over 3 rows does not round exactly as one over 11)."""
    assert [{k: a[k] for k in SAME_ANSWER} for a in answers] == [
        {k: e[k] for k in SAME_ANSWER} for e in expected
    ]
    for answer, wanted in zip(answers, expected, strict=True):
        assert answer["churn_probability"] == pytest.approx(wanted["churn_probability"], abs=1e-12)
        reasons = [(r["feature"], r["contribution"]) for r in answer["top_reasons"]]
        assert [feature for feature, _ in reasons] == [r["feature"] for r in wanted["top_reasons"]]
        assert [c for _, c in reasons] == pytest.approx(
            [r["contribution"] for r in wanted["top_reasons"]], abs=1e-6
        )


def logged_rows(engine: Engine, request_id: str) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(PREDICTIONS.c.endpoint, PREDICTIONS.c.customer_hash).where(
                    PREDICTIONS.c.request_id == request_id
                )
            )
        )


def wait_for_rows(engine: Engine, wanted: dict[str, int], timeout: float = 30) -> dict[str, int]:
    """Rows logged per request id once each has its wanted count, or `timeout` passed
    (the log flushes its buffer every CHURN_LOG_FLUSH_MS)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {rid: len(logged_rows(engine, rid)) for rid in wanted}
        if found == wanted or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def logged_for(engine: Engine, customer_id: str) -> int:
    hashed = customer_hash(customer_id, id_secret())
    with engine.connect() as connection:
        query = select(func.count()).where(PREDICTIONS.c.customer_hash == hashed)
        return int(connection.scalar(query) or 0)


def labels_for(engine: Engine, customer_id: str) -> list[Any]:
    hashed = customer_hash(customer_id, id_secret())
    with engine.connect() as connection:
        query = select(GROUND_TRUTH.c.churned, GROUND_TRUTH.c.observed_date).where(
            GROUND_TRUTH.c.customer_hash == hashed
        )
        return list(connection.execute(query))


def explicit_keywords(customer_id: str, client: Any) -> Any:
    """`/predict` called the way BentoML's documentation writes a call: one keyword per
    parameter (with `client` sync or async, the call or its coroutine)."""
    return client.predict(
        customer_id=customer_id,
        tenure_months=3,
        monthly_charges=89.5,
        total_charges=268.5,
        internet_service="Fiber",
        contract="Month-to-month",
        payment_method="Electronic check",
        support_calls=4,
        paperless_billing=True,
    )


def explicit_body(customer_id: str) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "tenure_months": 3,
        "monthly_charges": 89.5,
        "total_charges": 268.5,
        "internet_service": "Fiber",
        "contract": "Month-to-month",
        "payment_method": "Electronic check",
        "support_calls": 4,
        "paperless_billing": True,
    }


# --- discovery ------------------------------------------------------------------------------


def test_the_sync_client_discovers_scoring_and_feedback_with_their_parameters(
    server: str,
) -> None:
    with bentoml.SyncHTTPClient(server) as client:
        assert set(client.endpoints) >= ENDPOINTS
        assert all(callable(getattr(client, name)) for name in ENDPOINTS)
        routes = {name: client.endpoints[name].route for name in ENDPOINTS}
        assert routes == {
            "predict": "/predict",
            "predict_batch": "/predict/batch",
            "feedback": "/feedback",
        }
        # The parameters are the documented body's fields, not one opaque root input.
        predict = client.endpoints["predict"].input
        assert set(predict["properties"]) == set(CustomerData.model_fields)
        assert set(predict["required"]) == {
            name for name, field in CustomerData.model_fields.items() if field.is_required()
        }
        assert set(client.endpoints["predict_batch"].input["properties"]) == {"customers"}
        assert set(client.endpoints["feedback"].input["properties"]) == {
            "customer_id",
            "churned",
            "observed_date",
        }


# --- SyncHTTPClient -------------------------------------------------------------------------


def test_the_sync_client_scores_one_customer_with_keyword_arguments(
    server: str, customers: list[dict[str, Any]], log: Engine
) -> None:
    ids = RequestIds()
    with sync_client(server, ids) as client:
        unpacked = [client.predict(**customer) for customer in customers[:5]]
        keywords = explicit_keywords(f"{customers[0]['customer_id']}-kw", client)
    for answer in [*unpacked, keywords]:
        assert set(answer) == set(Prediction.model_fields)
        Prediction.model_validate(answer)
    same(unpacked, http_batch(server, customers[:5]))
    same([keywords], http_batch(server, [explicit_body(keywords["customer_id"])]))

    wanted = dict.fromkeys(ids.of("/predict"), 1)
    assert len(wanted) == 6
    assert wait_for_rows(log, wanted) == wanted
    assert {row.endpoint for rid in wanted for row in logged_rows(log, rid)} == {"predict"}


def test_the_sync_client_scores_a_batch(
    server: str, customers: list[dict[str, Any]], log: Engine
) -> None:
    batch = customers[5:25]
    ids = RequestIds()
    with sync_client(server, ids) as client:
        answer = client.predict_batch(customers=batch)
    assert answer["total_processed"] == len(batch)
    assert answer["high_risk_count"] == sum(
        p["risk_level"] == "high" for p in answer["predictions"]
    )
    same(answer["predictions"], http_batch(server, batch))

    (request_id,) = ids.of("/predict/batch")
    assert wait_for_rows(log, {request_id: len(batch)}) == {request_id: len(batch)}
    rows = logged_rows(log, request_id)
    assert {row.endpoint for row in rows} == {"batch"}
    secret = id_secret()
    assert {row.customer_hash for row in rows} == {
        customer_hash(c["customer_id"], secret) for c in batch
    }


def test_the_sync_client_sends_feedback(
    server: str, customers: list[dict[str, Any]], log: Engine
) -> None:
    customer_id = customers[25]["customer_id"]
    with bentoml.SyncHTTPClient(server, timeout=60) as client:
        stored = client.feedback(customer_id=customer_id, churned=True, observed_date=OBSERVED)
    assert stored == {"stored": 1}  # `spooled` (default 0) is left out
    assert [
        (row.churned, row.observed_date.isoformat()) for row in labels_for(log, customer_id)
    ] == [(True, OBSERVED)]


def test_a_refusal_raises_the_clients_exception_with_the_422_and_scores_nothing(
    server: str, customers: list[dict[str, Any]], log: Engine
) -> None:
    too_young = {**customers[26], "age": 3}
    ids = RequestIds()
    with sync_client(server, ids) as client:
        with pytest.raises(UnprocessableEntity) as refused:
            client.predict(**too_young)
        with pytest.raises(UnprocessableEntity) as refused_batch:
            client.predict_batch(customers=[customers[27], too_young])
        with pytest.raises(UnprocessableEntity) as refused_label:
            client.feedback(
                customer_id=customers[27]["customer_id"], churned="maybe", observed_date=OBSERVED
            )
        # A parameter the API does not have never leaves the client.
        with pytest.raises(TypeError, match="not found"):
            client.predict(**customers[26], loyalty_points=3)
    for error, field in [
        (refused.value, "age"),
        (refused_batch.value, "[1].age"),
        (refused_label.value, "churned"),
    ]:
        assert error.error_code == 422
        assert field in str(error), str(error)  # the service's body: field and rule
    assert "greater_than_equal" in str(refused.value)

    time.sleep(1.0)  # several log flushes: a row written by mistake would be there by now
    assert len(ids.refused()) == 3
    assert all(logged_rows(log, request_id) == [] for request_id in ids.refused())
    assert logged_for(log, customers[26]["customer_id"]) == 0
    assert logged_for(log, customers[27]["customer_id"]) == 0
    assert labels_for(log, customers[27]["customer_id"]) == []


# --- AsyncHTTPClient ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_async_client_scores_one_customer_a_batch_and_sends_feedback(
    server: str, customers: list[dict[str, Any]], log: Engine
) -> None:
    ids = RequestIds()
    one, many, label = customers[28], customers[29:40], customers[28]["customer_id"]
    async with bentoml.AsyncHTTPClient(server, timeout=60) as client:
        assert set(client.endpoints) >= ENDPOINTS
        client.client.event_hooks["response"].append(ids.note_async)
        single = await client.predict(**one)
        keywords = await explicit_keywords(f"{one['customer_id']}-kw", client)
        # Concurrent calls: answered each as its own request (merged in adaptive batches).
        concurrent = await asyncio.gather(*(client.predict(**c) for c in many))
        batch = await client.predict_batch(customers=many)
        stored = await client.feedback(customer_id=label, churned=False, observed_date=OBSERVED)
        with pytest.raises(UnprocessableEntity) as refused:
            await client.predict(**{**one, "contract": "Weekly"})
    assert refused.value.error_code == 422 and "contract" in str(refused.value)
    assert stored == {"stored": 1}  # `spooled` (default 0) is left out

    same([single], http_batch(server, [one]))
    same([keywords], http_batch(server, [explicit_body(keywords["customer_id"])]))
    expected = http_batch(server, many)
    same(list(concurrent), expected)
    same(batch["predictions"], expected)

    wanted = dict.fromkeys(ids.of("/predict"), 1) | dict.fromkeys(
        ids.of("/predict/batch"), len(many)
    )
    assert len(wanted) == 2 + len(many) + 1
    assert wait_for_rows(log, wanted) == wanted
    (refusal,) = ids.refused()
    assert logged_rows(log, refusal) == []
    assert [row.churned for row in labels_for(log, label)] == [False]


# --- bentoml.depends ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_bentoml_depends_caller_by_url_is_answered_in_json(
    server: str, customers: list[dict[str, Any]]
) -> None:
    """`bentoml.depends(url=...)` talks JSON: BentoML picks its pickle default only for a
    service of the same Bento (found in its runner mapping), which the front door refuses
    with a 415 (JSON only, tests/serving/test_server.py)."""
    customer = customers[40]
    proxy = bentoml.depends(url=server).get()
    await proxy.__aenter__()  # as BentoML's server sets up a service's dependencies
    try:
        answer = await proxy.to_async.predict(**customer)
    finally:
        await proxy.close()
    same([answer], http_batch(server, [customer]))


# --- with API keys --------------------------------------------------------------------------


def test_a_client_calls_a_keyed_service_with_the_key_on_its_http_client(
    deployed: tuple[ServerProcess, Engine], customers: list[dict[str, Any]]
) -> None:
    """The clients take a bearer `token` only; the service's key is `X-API-Key`, which goes
    on the client's own httpx client (`client.client.headers`) for every call."""
    server, engine = deployed
    with bentoml.SyncHTTPClient(server.url, timeout=60) as client:
        with pytest.raises(BentoMLException) as refused:
            client.predict(**customers[0])
        assert refused.value.error_code == 401
        client.client.headers["X-API-Key"] = KEYS[0]
        answer = client.predict(**customers[0])
    assert answer["customer_id"] == customers[0]["customer_id"]
    same([answer], http_batch_keyed(server.url, [customers[0]]))
    # Logged like any request: the client's call and the plain HTTP one.
    hashed = customer_hash(customers[0]["customer_id"], SECRET.encode())
    query = select(PREDICTIONS.c.endpoint).where(PREDICTIONS.c.customer_hash == hashed)
    deadline = time.monotonic() + 30
    while True:
        with engine.connect() as connection:
            endpoints = sorted(connection.scalars(query))
        if len(endpoints) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert endpoints == ["batch", "predict"]


def http_batch_keyed(url: str, customers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answer = httpx.post(
        f"{url}/predict/batch", json=customers, headers={"X-API-Key": KEYS[0]}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["predictions"])
