"""The production front door of the service: an ASGI middleware in every worker.

For the protected routes it checks the API key, the rate limit, the content type and the
body size. It then serves `/predict` and `/predict/batch` itself: validation, the cache,
scoring (`/predict` through BentoML's adaptive batcher, see `serving/batcher.py`) and the
answer, and hands every prediction to the prediction log before answering (with the journal
on, the row is on disk first; a 503 if it cannot be kept). Nothing here touches the database
on the request path. `/feedback` and deletions go on to their BentoML routes, and so does
`/predict` when no model is loaded (BentoML's API then answers the 503).

It is plain ASGI (no Starlette request objects) because it runs on every request: the body
is read once, parsed once with orjson, and replayed to BentoML unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.schema import CustomerData, batch_envelope
from core.settings import MAX_BATCH_CUSTOMERS
from monitoring.journal import NotDurable
from serving.auth import api_key_from_headers
from serving.auth_limit import client_address
from serving.batcher import Overloaded
from serving.body import BodyTimeout, BodyTooLarge, read_body, shape_refusal
from serving.cache import answer_from_cache
from serving.errors import validation_body
from serving.feedback_api import MAX_LABELS_PER_REQUEST, customer_id_problems
from serving.invalid import customer_list, invalid, invalid_batch
from serving.runtime import ServingRuntime, current_runtime

logger = logging.getLogger("churn.gateway")

Route = Literal["predict", "batch", "feedback", "delete"]

REQUEST_ID_HEADER = b"x-request-id"
AUTH_ANSWERS = {
    "missing": (401, "X-API-Key header required"),
    "wrong": (403, "X-API-Key not accepted"),
}
_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
ITEM_LIMITS: dict[Route, tuple[str, int | None]] = {
    "predict": ("body", None),
    "batch": ("customers", MAX_BATCH_CUSTOMERS),
    "feedback": ("labels", MAX_LABELS_PER_REQUEST),
}
"""What a route's top-level array holds and how many items it may have (None: one object)."""


def classify(method: str, path: str) -> Route | None:
    """The protected route a request is for, or None for the open ones."""
    path = path.rstrip("/") or "/"
    if method == "POST":
        return {"/predict": "predict", "/predict/batch": "batch", "/feedback": "feedback"}.get(
            path  # type: ignore[return-value]
        )
    if method == "DELETE" and path.startswith("/customers/"):
        return "delete"
    return None


def header(scope: Scope, name: bytes) -> bytes | None:
    """First value of a request header (names are lower-case in ASGI)."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def respond_bytes(
    send: Send, status: int, payload: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """Send a JSON answer already encoded."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def respond(
    send: Send,
    status: int,
    body: dict[str, Any],
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
) -> None:
    """Send a small JSON answer."""
    await respond_bytes(send, status, orjson.dumps(body), list(headers))


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields the already-read body, then defers to the real one."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def adding_headers(send: Send, extra_headers: list[tuple[bytes, bytes]]) -> Send:
    """A `send` that adds headers to the response it passes through."""

    async def forward(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra_headers]}
        await send(message)

    return forward


@dataclass(frozen=True)
class ParsedCustomer:
    """A validated `/predict` body, with the forms the cache and the log need."""

    customer: CustomerData
    features: dict[str, Any]
    """The request's fields without nulls: what the log stores (its record drops the id)."""
    canonical: bytes
    """The whole request with sorted keys and no nulls: what the cache key hashes."""


def parse_customer(body: bytes) -> ParsedCustomer:
    """Validate a `/predict` body. Raises pydantic's ValidationError (not-JSON included)."""
    customer = CustomerData.model_validate_json(body)
    fields = customer.model_dump(mode="json", exclude_none=True)
    canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return ParsedCustomer(customer, fields, canonical)


def extra_invalid(problems: dict[int, list[dict[str, str]]], batch: bool) -> dict[str, Any]:
    """The 422 body for `extra` objects that do not fit the model (`[i].` prefixes in a batch)."""
    return validation_body(
        [
            {**problem, "field": f"[{i}].{problem['field']}"} if batch else problem
            for i, found in problems.items()
            for problem in found
        ]
    )


class Gateway:
    """ASGI middleware: auth, rate limit, size and type checks, cache, prediction log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = classify(scope["method"], scope["path"]) if scope["type"] == "http" else None
        runtime = current_runtime() if route else None
        if route is None or runtime is None:
            await self.app(scope, receive, send)
            return
        await self._guarded(route, runtime, scope, receive, send)

    async def _guarded(
        self, route: Route, runtime: ServingRuntime, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """A fault in this layer is a logged 500 that names it, never a hung request."""
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        if route == "predict":
            runtime.predicting += 1
        try:
            await self._handle(route, runtime, scope, receive, tracking)
        except Exception as error:
            logger.exception("gateway fault on %s %s", scope["method"], route)
            if not started:
                await respond(send, 500, {"error": f"server: {type(error).__name__}"})
        finally:
            if route == "predict":
                runtime.predicting -= 1

    async def _handle(
        self, route: Route, runtime: ServingRuntime, scope: Scope, receive: Receive, send: Send
    ) -> None:
        started = time.perf_counter()
        presented = api_key_from_headers(scope["headers"])
        verdict = runtime.authenticate(presented)
        address = client_address(scope)
        if verdict in ("missing", "wrong"):
            status, message = AUTH_ANSWERS[verdict]
            await respond(
                send, *await runtime.failed_authentication(verdict, address, status, message)
            )
            return
        if scope["method"] == "POST" and not _is_json(header(scope, b"content-type")):
            message = "content-type: only application/json is accepted"
            await respond(send, *await runtime.before_admission(address, 415, message))
            return
        seconds = runtime.settings.body_timeout_s
        try:
            body = await read_body(
                header(scope, b"content-length"), receive, runtime.max_body_bytes, seconds
            )
        except BodyTooLarge:
            message = f"body: larger than {runtime.max_body_bytes} bytes"
            await respond(send, *await runtime.before_admission(address, 413, message))
            return
        except BodyTimeout:
            message = f"body: not received within {seconds:g} s (CHURN_BODY_TIMEOUT_S)"
            status, answer, headers = await runtime.before_admission(address, 408, message)
            # The body was not read to its end: this connection cannot carry another request.
            await respond(send, status, answer, [*headers, (b"connection", b"close")])
            return
        if route in ITEM_LIMITS and (refusal := await shape_refusal(body, *ITEM_LIMITS[route])):
            await respond(send, *await runtime.before_admission(address, 413, refusal))
            return

        scoring = route in ("predict", "batch") and runtime.model is not None
        parsed: ParsedCustomer | ValidationError | None = None
        if scoring and route == "predict":
            try:
                parsed = parse_customer(body)
            except ValidationError as error:
                parsed = error
        cache_key = (
            runtime.cache_key(parsed.canonical) if isinstance(parsed, ParsedCustomer) else None
        )
        allowed, retry_after, cached, _, refused_by = await runtime.admit(
            runtime.client_id(presented, address), cache_key, address
        )
        if not allowed:
            await respond(send, *runtime.too_many(refused_by, retry_after))
            return

        request_id = _request_id(scope)
        try:
            if isinstance(parsed, ValidationError):
                headers = [(REQUEST_ID_HEADER, request_id.encode())]
                await respond(send, 422, invalid(parsed), headers)
            elif isinstance(parsed, ParsedCustomer):
                await self._predict(runtime, send, parsed, cache_key, cached, request_id, started)
            elif scoring:
                await self._batch(runtime, send, body, request_id, started)
            else:
                await self._forward(route, scope, body, receive, send, request_id)
        except NotDurable as error:  # raised before anything is sent
            message = f"prediction log cannot store rows: {error}; retry shortly"
            await respond(send, 503, {"error": message}, [(REQUEST_ID_HEADER, request_id.encode())])

    async def _forward(
        self,
        route: Route,
        scope: Scope,
        body: bytes,
        receive: Receive,
        send: Send,
        request_id: str,
    ) -> None:
        """The routes BentoML answers: `/feedback`, deletions, scoring without a model."""
        if route == "delete":
            # Checked here: an id the router cannot match (a control character) must get
            # a 422 that names it, not the router's bare 404.
            problems = customer_id_problems(scope["path"].removeprefix("/customers/"))
            if problems:
                await respond(send, 422, problems)
                return
        headers = [(REQUEST_ID_HEADER, request_id.encode())]
        await self.app(scope, replaying(body, receive), adding_headers(send, headers))

    async def _predict(
        self,
        runtime: ServingRuntime,
        send: Send,
        parsed: ParsedCustomer,
        cache_key: str | None,
        cached: bytes | None,
        request_id: str,
        started: float,
    ) -> None:
        """One customer: from the cache, scored at once when alone, else in a batch."""
        customer = parsed.customer
        runtime.check_durable()
        if cached is not None:
            await self._answer_from_cache(send, runtime, parsed, cached, request_id, started)
            return
        headers = [(REQUEST_ID_HEADER, request_id.encode())]
        problems = runtime.extra_problems([customer])
        if problems:
            await respond(send, 422, extra_invalid(problems, batch=False), headers)
            return
        prediction = await self._score_one(runtime, customer)
        if prediction is None:
            await respond(send, 503, {"error": "server: overloaded, retry shortly"}, headers)
            return
        answer = orjson.dumps(prediction)
        if cache_key:
            headers.append((b"x-cache", b"miss"))
        latency_ms = (time.perf_counter() - started) * 1000.0
        # Logged first: with the journal on, the row is on disk before the answer leaves.
        await runtime.after_prediction(
            customer, parsed.features, prediction, cache_key, request_id, latency_ms
        )
        await respond_bytes(send, 200, answer, headers)

    async def _score_one(
        self, runtime: ServingRuntime, customer: CustomerData
    ) -> dict[str, Any] | None:
        """When no other `/predict` is in this worker, no batch is coming: score now rather
        than wait in the batching queue (the quiet hours' latency). Under concurrency the
        request joins an adaptive batch. None: the batcher shed it (overload)."""
        await asyncio.sleep(0)  # let requests that arrived together register first
        if runtime.predicting == 1 or runtime.batcher is None:
            (prediction,) = runtime.score_rows([customer])
            return prediction
        try:
            return await runtime.batcher.score(customer)
        except Overloaded:
            return None

    async def _batch(
        self, runtime: ServingRuntime, send: Send, body: bytes, request_id: str, started: float
    ) -> None:
        """`/predict/batch`: up to `MAX_BATCH_CUSTOMERS` customers in one vectorised pass."""
        headers = [(REQUEST_ID_HEADER, request_id.encode())]
        try:
            customers = customer_list.validate_json(body)
        except ValidationError as error:
            await respond(send, 422, invalid_batch(error, body), headers)
            return
        problems = runtime.extra_problems(customers)
        if problems:
            await respond(send, 422, extra_invalid(problems, batch=True), headers)
            return
        runtime.check_durable()
        scored = await runtime.score_in_background(customers, started) if customers else None
        predictions = scored.rows() if scored else []
        high_risk = scored.high_risk_count if scored else 0
        processing_ms = (time.perf_counter() - started) * 1000.0
        answer = orjson.dumps(batch_envelope(predictions, high_risk, processing_ms))
        latency_ms = (time.perf_counter() - started) * 1000.0
        await runtime.after_batch(customers, predictions, request_id, latency_ms)
        await respond_bytes(send, 200, answer, headers)

    async def _answer_from_cache(
        self,
        send: Send,
        runtime: ServingRuntime,
        parsed: ParsedCustomer,
        cached: bytes,
        request_id: str,
        started: float,
    ) -> None:
        """A hit: the stored answer with this request's customer id and latency."""
        prediction = answer_from_cache(cached, parsed.customer.customer_id)
        latency_ms = (time.perf_counter() - started) * 1000.0
        prediction["latency_ms"] = latency_ms
        await runtime.log_hit(parsed.customer, parsed.features, prediction, request_id, latency_ms)
        await respond(
            send,
            200,
            prediction,
            [(REQUEST_ID_HEADER, request_id.encode()), (b"x-cache", b"hit")],
        )


def _is_json(content_type: bytes | None) -> bool:
    """JSON bodies only: nothing reachable decodes pickle or multipart uploads."""
    if content_type is None:
        return True  # clients such as curl -d omit it; the body is still parsed as JSON
    return content_type.split(b";")[0].strip().lower() == b"application/json"


def _request_id(scope: Scope) -> str:
    """The caller's X-Request-ID if it is safe to echo and store, else a new one."""
    given = header(scope, REQUEST_ID_HEADER)
    if given and _SAFE_REQUEST_ID.fullmatch(given):
        return given.decode()
    return uuid.uuid4().hex
