"""The HTTP front door: an ASGI middleware in every worker, ahead of BentoML's routes.

For the protected routes it checks what HTTP owns: the API key, the content type, the body's
size and shape (a 401/403, 415, 408 or 413 before anything is parsed). It then hands the
body to the request path (serving/request_path.py: `/predict`, `/predict/batch`) or the
ground-truth routes (serving/feedback_api.py: `/feedback`), and sends their answer.
Deletions go on to their BentoML route once their id is checked.

BentoML builds its middleware before the service instance exists, so the front door is
given `adapters_of`: a function returning that instance's adapters (service.py).

It is plain ASGI (no Starlette request objects) because it runs on every request: the body
is read once and parsed once, with orjson and pydantic.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.settings import MAX_BATCH_CUSTOMERS
from serving import request_path
from serving.adapters import Adapters
from serving.auth import api_key_from_headers
from serving.auth_limit import client_address
from serving.body import BodyTimeout, BodyTooLarge, read_body, shape_refusal
from serving.feedback_api import MAX_LABELS_PER_REQUEST, customer_id_problems, receive_labels
from serving.metrics import count_error
from serving.request_path import REQUEST_ID_HEADER, Answer, Caller

logger = logging.getLogger("churn.gateway")

Route = Literal["predict", "batch", "feedback", "delete"]

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


class Gateway:
    """ASGI middleware: the HTTP checks of the protected routes, then the request path."""

    def __init__(self, app: ASGIApp, adapters_of: Callable[[], Adapters | None]) -> None:
        self.app = app
        self.adapters_of = adapters_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = classify(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if route is None and scope["type"] == "http" and scope["path"] == "/metrics":
            await self._before_scrape()
        parts = self.adapters_of() if route else None
        if route is None or parts is None:
            await self.app(scope, receive, send)
            return
        await self._guarded(route, parts, scope, receive, send)

    async def _before_scrape(self) -> None:
        """Before BentoML writes `/metrics`: this worker's figures and the monitoring
        jobs' latest results (serving/model_metrics.py), if its copy is stale."""
        parts = self.adapters_of()
        if parts is not None:
            try:
                await parts.before_scrape()
            except Exception:  # a scrape must still get BentoML's metrics
                logger.exception("monitoring gauges not refreshed")

    async def _guarded(
        self, route: Route, parts: Adapters, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """A fault in this layer is a logged 500 that names it, never a hung request.
        Every refusal or failure is counted in `churn_errors_total` by kind."""
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 400:
                    count_error(message["status"])
            await send(message)

        if route == "predict":
            parts.predicting += 1
        try:
            await self._handle(route, parts, scope, receive, tracking)
        except Exception as error:
            logger.exception("gateway fault on %s %s", scope["method"], route)
            if not started:
                count_error(500)
                await respond(send, 500, {"error": f"server: {type(error).__name__}"})
        finally:
            if route == "predict":
                parts.predicting -= 1

    async def _handle(
        self, route: Route, parts: Adapters, scope: Scope, receive: Receive, send: Send
    ) -> None:
        started = time.perf_counter()
        presented = api_key_from_headers(scope["headers"])
        verdict = parts.authenticate(presented)
        address = client_address(scope)
        if verdict in ("missing", "wrong"):
            status, message = AUTH_ANSWERS[verdict]
            await respond(
                send, *await parts.failed_authentication(verdict, address, status, message)
            )
            return
        if scope["method"] == "POST" and not _is_json(header(scope, b"content-type")):
            message = "content-type: only application/json is accepted"
            await respond(send, *await parts.before_admission(address, 415, message))
            return
        seconds = parts.settings.body_timeout_s
        try:
            body = await read_body(
                header(scope, b"content-length"), receive, parts.max_body_bytes, seconds
            )
        except BodyTooLarge:
            message = f"body: larger than {parts.max_body_bytes} bytes"
            await respond(send, *await parts.before_admission(address, 413, message))
            return
        except BodyTimeout:
            message = f"body: not received within {seconds:g} s (CHURN_BODY_TIMEOUT_S)"
            status, refusal, headers = await parts.before_admission(address, 408, message)
            # The body was not read to its end: this connection cannot carry another request.
            await respond(send, status, refusal, [*headers, (b"connection", b"close")])
            return
        if route in ITEM_LIMITS and (too_big := await shape_refusal(body, *ITEM_LIMITS[route])):
            await respond(send, *await parts.before_admission(address, 413, too_big))
            return

        caller = Caller(parts.client_id(presented, address), address, _request_id(scope))
        if route == "predict":
            answer = await request_path.predict(body, caller, parts, started)
        elif route == "batch":
            answer = await request_path.predict_batch(body, caller, parts, started)
        else:
            admission = await parts.admit(caller.client_id, None, address)
            if not admission.allowed:
                await respond(send, *parts.too_many(admission.refused_by, admission.retry_after))
                return
            if route == "delete":
                await self._forward(scope, body, receive, send, caller.request_id)
                return
            status, labels_answer = await receive_labels(parts, body)
            answer = Answer.of(
                status, labels_answer, [(REQUEST_ID_HEADER, caller.request_id.encode())]
            )
        await respond_bytes(send, answer.status, answer.body, answer.headers)

    async def _forward(
        self, scope: Scope, body: bytes, receive: Receive, send: Send, request_id: str
    ) -> None:
        """Deletions, to their BentoML route."""
        # Checked here: an id the router cannot match (a control character) must get
        # a 422 that names it, not the router's bare 404.
        problems = customer_id_problems(scope["path"].removeprefix("/customers/"))
        if problems:
            await respond(send, 422, problems)
            return
        headers = [(REQUEST_ID_HEADER, request_id.encode())]
        await self.app(scope, replaying(body, receive), adding_headers(send, headers))


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
