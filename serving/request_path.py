"""The scoring request path, read top to bottom: what happens to a `/predict` body.

    parse and validate → cache → adaptive batch → features → booster → answer → log

`predict` is that flow as one function; `predict_batch` is the same path without the
batcher. Both take the request's bytes and return an `Answer` (status, JSON body, headers):
they know nothing of ASGI or BentoML, so the HTTP front door (serving/gateway.py) and the
service's API methods (service.py) call the same code. Every collaborator is an adapter
handed in as `parts` (serving/adapters.py): rate limit, cache, batcher, prediction log.

The log is written before the answer leaves: with the journal on, the row is on disk
first, and a row that cannot be kept turns the answer into a 503 (`NotDurable`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from core.schema import CustomerData, batch_envelope
from core.settings import MAX_BATCH_CUSTOMERS
from monitoring.journal import NotDurable
from monitoring.records import PredictionRecord, Shadow
from serving.adapters import Adapters, JsonAnswer
from serving.batcher import Overloaded
from serving.cache import answer_from_cache
from serving.errors import validation_body
from serving.invalid import customer_list, invalid, invalid_batch
from serving.metrics import observe_answer, observe_answers
from serving.scoring import SHADOW_KEY, ScoredBatch

Header = tuple[bytes, bytes]
REQUEST_ID_HEADER = b"x-request-id"


@dataclass(frozen=True)
class Caller:
    """Who sent the request: the rate limit counts `client_id`, the auth-failure limit
    `address`; `request_id` names the answer's log rows."""

    client_id: str
    address: str
    request_id: str


@dataclass(frozen=True)
class Answer:
    """What to send back: a status, the JSON body already encoded, extra headers."""

    status: int
    body: bytes
    headers: list[Header]

    @classmethod
    def of(cls, status: int, body: dict[str, Any], headers: Sequence[Header] = ()) -> Answer:
        return cls(status, orjson.dumps(body), list(headers))

    @classmethod
    def small(cls, answer: JsonAnswer) -> Answer:
        """An adapter's (status, body, headers) answer, such as a 429."""
        return cls.of(*answer)


@dataclass(frozen=True)
class ParsedCustomer:
    """A validated `/predict` body, with the forms the cache and the log need."""

    customer: CustomerData
    features: dict[str, Any]
    """The request's fields without nulls: what the log stores (`PredictionRecord` drops
    the customer id from them; the row holds only its hash)."""
    canonical: bytes
    """The whole request with sorted keys and no nulls: what the cache key hashes."""


def parse_customer(body: bytes) -> ParsedCustomer:
    """Validate a `/predict` body. Raises pydantic's ValidationError (not-JSON included)."""
    customer = CustomerData.model_validate_json(body)
    fields = customer.model_dump(mode="json", exclude_none=True)
    return ParsedCustomer(customer, fields, orjson.dumps(fields, option=orjson.OPT_SORT_KEYS))


# --- /predict -------------------------------------------------------------------------------


async def predict(body: bytes, caller: Caller, parts: Adapters, started: float) -> Answer:
    """`POST /predict`: one customer, answered from the cache or scored in a batch."""
    # 1. parse and validate (an invalid body still counts against the rate limit below)
    try:
        parsed: ParsedCustomer | ValidationError = parse_customer(body)
    except ValidationError as error:
        parsed = error
    # 2. rate limit and cache look-up, in one Redis round trip
    served = parts.served  # the cache key's models: a swap meanwhile must not cache under it
    key = parts.cache_key(parsed.canonical) if isinstance(parsed, ParsedCustomer) else None
    admission = await parts.admit(caller.client_id, key, caller.address)
    if not admission.allowed:
        return Answer.small(parts.too_many(admission.refused_by, admission.retry_after))
    headers = [(REQUEST_ID_HEADER, caller.request_id.encode())]
    if isinstance(parsed, ValidationError):
        return Answer.of(422, invalid(parsed), headers)
    if parts.model is None:
        return Answer.of(503, {"error": parts.no_model_reason()}, headers)
    try:
        parts.check_durable()
        if admission.cached is not None:
            return await _answer_from_cache(parts, parsed, admission.cached, caller, started)
        if problems := parts.extra_problems([parsed.customer]):
            return Answer.of(422, _extra_invalid(problems, batch=False), headers)
        # 3. adaptive batch → features → booster → answer (serving/scoring.py)
        prediction = await _score_one(parts, parsed.customer)
        if prediction is None:
            return Answer.of(503, {"error": "server: overloaded, retry shortly"}, headers)
        shadow = prediction.pop(SHADOW_KEY, None)
        answer = orjson.dumps(prediction)
        hashed = parts.hash_id(parsed.customer.customer_id)  # once: cache index and log
        if key is not None:
            if parts.served is served:
                parts.remember(key, prediction, hashed, shadow)
            headers.append((b"x-cache", b"miss"))
        # 4. log, before the answer leaves
        cache = "miss" if key is not None else "none"
        latency_ms = (time.perf_counter() - started) * 1000.0
        row = _record(parts, hashed, parsed.features, prediction, caller, cache, latency_ms, shadow)
        await parts.write_log([row])
    except NotDurable as error:
        return _not_durable(error, headers)
    _observe_one(prediction, started)
    return Answer(200, answer, headers)


def _observe_one(prediction: dict[str, Any], started: float) -> None:
    seconds = time.perf_counter() - started
    observe_answer("predict", seconds, prediction["churn_probability"], prediction["risk_level"])


async def _score_one(parts: Adapters, customer: CustomerData) -> dict[str, Any] | None:
    """When no other `/predict` is in this worker, no batch is coming: score now rather
    than wait in the batching queue (the quiet hours' latency). Under concurrency the
    request joins an adaptive batch. None: the batcher shed it (overload)."""
    await asyncio.sleep(0)  # let requests that arrived together register first
    if parts.predicting == 1 or parts.batcher is None:
        (prediction,) = parts.score([customer]).rows(with_shadow=True)
        return prediction
    try:
        return await parts.batcher.score(customer)
    except Overloaded:
        return None


async def _answer_from_cache(
    parts: Adapters, parsed: ParsedCustomer, cached: bytes, caller: Caller, started: float
) -> Answer:
    """A hit: the stored answer with this request's customer id and latency, logged too
    (a cached answer is still a served prediction)."""
    prediction = answer_from_cache(cached, parsed.customer.customer_id)
    shadow = prediction.pop(SHADOW_KEY, None)
    latency_ms = (time.perf_counter() - started) * 1000.0
    prediction["latency_ms"] = latency_ms
    hashed = parts.hash_id(parsed.customer.customer_id)
    row = _record(parts, hashed, parsed.features, prediction, caller, "hit", latency_ms, shadow)
    await parts.write_log([row])
    headers = [(REQUEST_ID_HEADER, caller.request_id.encode()), (b"x-cache", b"hit")]
    _observe_one(prediction, started)
    return Answer.of(200, prediction, headers)


# --- /predict/batch -------------------------------------------------------------------------


class CustomersBody(BaseModel):
    """`/predict/batch` as BentoML's clients send it: `{"customers": [...]}`."""

    model_config = ConfigDict(extra="forbid")

    customers: Annotated[list[CustomerData], Field(fail_fast=True)]


def parse_customers(body: bytes) -> list[CustomerData]:
    """A bare JSON array of customers, or the `{"customers": [...]}` object."""
    if body.lstrip()[:1] == b"[":
        return customer_list.validate_json(body)
    return CustomersBody.model_validate_json(body).customers


async def predict_batch(body: bytes, caller: Caller, parts: Adapters, started: float) -> Answer:
    """`POST /predict/batch`: up to `MAX_BATCH_CUSTOMERS` customers in one vectorised pass."""
    admission = await parts.admit(caller.client_id, None, caller.address)
    if not admission.allowed:
        return Answer.small(parts.too_many(admission.refused_by, admission.retry_after))
    headers = [(REQUEST_ID_HEADER, caller.request_id.encode())]
    if parts.model is None:
        return Answer.of(503, {"error": parts.no_model_reason()}, headers)
    # 1. parse and validate
    try:
        customers = parse_customers(body)
    except ValidationError as error:
        return Answer.of(422, invalid_batch(error, body), headers)
    if len(customers) > MAX_BATCH_CUSTOMERS:
        message = f"customers: at most {MAX_BATCH_CUSTOMERS} per request, got {len(customers)}"
        return Answer.of(413, {"error": message}, headers)
    if problems := parts.extra_problems(customers):
        return Answer.of(422, _extra_invalid(problems, batch=True), headers)
    try:
        parts.check_durable()
        # 2. features → booster → answer, in the scoring thread (the event loop stays free)
        scored = await parts.score_in_background(customers, started) if customers else None
        predictions = scored.rows() if scored else []
        answer = orjson.dumps(_envelope(predictions, scored, started))
        # 3. log, one row per customer
        latency_ms = (time.perf_counter() - started) * 1000.0
        shadows = scored.shadows() if scored else []
        records = _batch_records(parts, customers, predictions, shadows, caller, latency_ms)
        await parts.write_log(records)
    except NotDurable as error:
        return _not_durable(error, headers)
    if scored is not None:
        seconds = time.perf_counter() - started
        observe_answers("batch", seconds, scored.probability, scored.risk_level)
    return Answer(200, answer, headers)


def _envelope(
    predictions: list[dict[str, Any]], scored: ScoredBatch | None, started: float
) -> dict[str, Any]:
    high_risk = scored.high_risk_count if scored else 0
    return batch_envelope(predictions, high_risk, (time.perf_counter() - started) * 1000.0)


# --- the log rows ---------------------------------------------------------------------------


def _record(
    parts: Adapters,
    customer_hash: str,
    features: dict[str, Any],
    prediction: dict[str, Any],
    caller: Caller,
    cache: str,
    latency_ms: float,
    shadow: list[Any] | None,
    endpoint: str = "predict",
) -> PredictionRecord:
    """The log row of one answer (the log holds the customer id's hash only); `shadow` is
    the other model's `[version, probability]` during an experiment."""
    return PredictionRecord.from_answer(
        prediction,
        request_id=caller.request_id,
        customer_hash=customer_hash,
        features=features,
        latency_ms=latency_ms,
        cache=cache,
        endpoint=endpoint,
        default_model_version=parts.model_version,
        shadow=Shadow(*shadow) if shadow else None,
    )


_customer_fields = TypeAdapter(list[CustomerData])


def _batch_records(
    parts: Adapters,
    customers: list[CustomerData],
    predictions: Sequence[dict[str, Any]],
    shadows: Sequence[list[Any] | None],
    caller: Caller,
    latency_ms: float,
) -> list[PredictionRecord]:
    """One row per customer; the features of all dumped in one pydantic call."""
    features = _customer_fields.dump_python(customers, mode="json", exclude_none=True)
    return [
        _record(parts, parts.hash_id(c.customer_id), f, p, caller, "none", latency_ms, s, "batch")
        for c, f, p, s in zip(customers, features, predictions, shadows, strict=True)
    ]


# --- refusals -------------------------------------------------------------------------------


def _extra_invalid(problems: dict[int, list[dict[str, str]]], batch: bool) -> dict[str, Any]:
    """The 422 body for `extra` objects that do not fit the model (`[i].` prefixes in a batch)."""
    return validation_body(
        [
            {**problem, "field": f"[{i}].{problem['field']}"} if batch else problem
            for i, found in problems.items()
            for problem in found
        ]
    )


def _not_durable(error: NotDurable, headers: list[Header]) -> Answer:
    message = f"prediction log cannot store rows: {error}; retry shortly"
    return Answer.of(503, {"error": message}, headers)
