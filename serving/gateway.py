"""The production front door of the service: an ASGI middleware in every worker.

For the protected routes it checks the API key, the rate limit, the content type and the
body size, then either answers `/predict` from the cache or lets BentoML score the request,
and hands every 200 answer to the prediction log. All of this happens before BentoML's
batching queue, so a cache hit never waits for a batch, and nothing here touches the
database on the request path.

It is plain ASGI (no Starlette request objects) because it runs on every request: the body
is read once, parsed once with orjson, and replayed to BentoML unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.auth import api_key_from_headers
from serving.feedback_api import customer_id_problems
from serving.metrics import count_auth_failure
from serving.runtime import ServingRuntime, current_runtime
from training.schema import CustomerData

logger = logging.getLogger("churn.gateway")

Route = Literal["predict", "batch", "feedback", "delete"]

REQUEST_ID_HEADER = b"x-request-id"
AUTH_ANSWERS = {
    "missing": (401, "X-API-Key header required"),
    "wrong": (403, "X-API-Key not accepted"),
}
_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


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


class BodyTooLarge(Exception):
    """The request body exceeds the configured limit."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing (before reading it all) anything over `limit`."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


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


class CapturedAnswer:
    """What the downstream app answered: status and, for a 200, the body bytes."""

    def __init__(self) -> None:
        self.status = 0
        self.chunks: list[bytes] = []

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def capturing(
    send: Send, answer: CapturedAnswer, extra_headers: list[tuple[bytes, bytes]]
) -> Callable[[Message], Awaitable[None]]:
    """A `send` that passes everything through, adds headers, and keeps a 200's body."""

    async def forward(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            message = {**message, "headers": [*message.get("headers", []), *extra_headers]}
        elif message["type"] == "http.response.body" and answer.status == 200:
            answer.chunks.append(message.get("body", b""))
        await send(message)

    return forward


def canonical_customer(body: bytes) -> tuple[CustomerData, bytes] | None:
    """The validated customer and its canonical bytes (sorted keys, no nulls), or None
    when the body is invalid (BentoML will then answer the 422)."""
    try:
        customer = CustomerData.model_validate_json(body)
        fields = customer.model_dump(mode="json", exclude_none=True)
        return customer, orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    except (ValidationError, orjson.JSONEncodeError):
        return None


def not_json(error: Exception) -> dict[str, Any]:
    """The 422 body for a request body that is not JSON at all."""
    return {
        "error": f"invalid request: body: not valid JSON ({error}) (json_invalid)",
        "detail": [{"field": "body", "rule": "json_invalid", "message": str(error)}],
    }


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
        if verdict in ("missing", "wrong"):
            count_auth_failure(verdict)
            status, message = AUTH_ANSWERS[verdict]
            await respond(send, status, {"error": message})
            return
        if scope["method"] == "POST" and not _is_json(header(scope, b"content-type")):
            await respond(send, 415, {"error": "content-type: only application/json is accepted"})
            return
        try:
            body = await read_body(scope, receive, runtime.max_body_bytes)
        except BodyTooLarge:
            await respond(send, 413, {"error": f"body: larger than {runtime.max_body_bytes} bytes"})
            return

        client_id = runtime.client_id(presented, scope)
        parsed = canonical_customer(body) if route == "predict" else None
        cache_key = runtime.cache_key(parsed[1]) if parsed else None
        allowed, retry_after, cached = await runtime.admit(client_id, cache_key)
        if not allowed:
            await respond(
                send,
                429,
                {"error": f"rate limit {runtime.rate_text} exceeded; retry in {retry_after} s"},
                [(b"retry-after", str(retry_after).encode())],
            )
            return

        document: Any = None
        if route in ("predict", "batch") and parsed is None:
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError as error:
                await respond(send, 422, not_json(error))
                return

        if route == "delete":
            # Checked here: an id the router cannot match (a control character) must get
            # a 422 that names it, not the router's bare 404.
            problems = customer_id_problems(scope["path"].removeprefix("/customers/"))
            if problems:
                await respond(send, 422, problems)
                return

        request_id = _request_id(scope)
        headers = [(REQUEST_ID_HEADER, request_id.encode())]
        if parsed and cached is not None:
            await self._answer_from_cache(send, runtime, parsed[0], cached, request_id, started)
            return
        if cache_key:
            headers.append((b"x-cache", b"miss"))
        answer = CapturedAnswer()
        alone = await self._score_if_alone(runtime, parsed[0]) if parsed else None
        if alone is not None:
            await respond_bytes(send, 200, alone, headers)
            answer.status, answer.chunks = 200, [alone]
        else:
            await self.app(scope, replaying(body, receive), capturing(send, answer, headers))
        if answer.status != 200:
            return
        latency_ms = (time.perf_counter() - started) * 1000.0
        try:
            if route == "predict" and parsed:
                runtime.after_prediction(parsed[0], answer.body, cache_key, request_id, latency_ms)
            elif route == "batch":
                runtime.after_batch(document, answer.body, request_id, latency_ms)
        except Exception:  # the answer is already sent; say loudly what was not logged
            logger.exception("prediction served but not logged (request %s)", request_id)

    async def _score_if_alone(
        self, runtime: ServingRuntime, customer: CustomerData
    ) -> bytes | None:
        """When no other `/predict` is in this worker, no batch is coming: score now rather
        than wait in the batching queue (the quiet hours' latency). Under concurrency the
        request joins BentoML's adaptive batches as usual."""
        await asyncio.sleep(0)  # let requests that arrived together register first
        if runtime.predicting != 1:
            return None
        return runtime.score_alone(customer)

    async def _answer_from_cache(
        self,
        send: Send,
        runtime: ServingRuntime,
        customer: CustomerData,
        cached: bytes,
        request_id: str,
        started: float,
    ) -> None:
        """A hit: the stored answer, re-stamped with this request's latency."""
        prediction = orjson.loads(cached)
        latency_ms = (time.perf_counter() - started) * 1000.0
        prediction["latency_ms"] = latency_ms
        await respond(
            send,
            200,
            prediction,
            [(REQUEST_ID_HEADER, request_id.encode()), (b"x-cache", b"hit")],
        )
        runtime.log_hit(customer, prediction, request_id, latency_ms)


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
