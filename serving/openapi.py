"""The OpenAPI document the service publishes (`/docs.json`) and its UI (`/docs`).

BentoML's own document names BentoML, has version "None", declares status codes the
service never sends (and none of those it does), and mixes OpenAPI 3.0 and 3.1 schemas, so
no client can be generated from it. This module keeps BentoML's list of routes and their
docstrings, and describes every operation from the project's pydantic models: the request
bodies, every answer the gateway and the routes really send, and the API-key scheme.
A client generated from it (openapi-python-client) installs and calls every endpoint
(tests/serving/test_contract.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema
from starlette.types import ASGIApp, Receive, Scope, Send

from core import __version__
from core.pipeline.extras import ExtraColumn
from core.schema import EXTRA_FIELD, BatchPrediction, CustomerData, Health, Prediction
from core.settings import MAX_BATCH_CUSTOMERS
from monitoring.feedback import Label
from serving.bentoml_internals import SWAGGER_UI_PAGE
from serving.feedback_api import MAX_LABELS_PER_REQUEST

OPENAPI_VERSION = "3.1.0"
"""3.1: the dialect pydantic writes (nullable fields as `anyOf` with `null`)."""

TITLE = "Churn prediction service"
DESCRIPTION = (
    "Calibrated churn probability, decision, risk level, reasons and advice per customer, "
    "and the ground truth that monitors the model. `will_churn` is the model's decision at "
    "its own threshold; the risk bands are placed around that threshold, so a customer the "
    "model says will churn is never `low` risk. Protected routes need `X-API-Key` when the "
    "service has keys configured."
)
REF = "#/components/schemas/{model}"
SECURITY_SCHEME = "ApiKey"


# --- answer bodies the service sends besides the schema's models ---------------------------


class ErrorBody(BaseModel):
    """Any refusal other than a validation error: `error` says what and why."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="What was refused and why, e.g. 'body: larger than …'.")


class Problem(BaseModel):
    """One broken rule of a 422."""

    field: str = Field(description="The field, e.g. `age` or `customers[3].age`.")
    rule: str = Field(description="The rule it broke, e.g. `greater_than_equal`.")
    message: str


class ValidationErrorBody(BaseModel):
    """A 422: a one-line summary and one entry per broken rule."""

    error: str
    detail: list[Problem]


class LabelsReceived(BaseModel):
    """Answer to `/feedback`: labels committed (200), or spooled while the database is down
    (202, replayed when it is back)."""

    stored: int
    spooled: int = 0


class CustomerDeleted(BaseModel):
    """Answer to `DELETE /customers/{customer_id}`: what was removed, by kind."""

    deleted: dict[str, int]


MODELS: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
    (CustomerData, "validation"),
    (Label, "validation"),
    (Prediction, "serialization"),
    (BatchPrediction, "serialization"),
    (Health, "serialization"),
    (LabelsReceived, "serialization"),
    (CustomerDeleted, "serialization"),
    (ErrorBody, "serialization"),
    (ValidationErrorBody, "serialization"),
]


# --- operations -----------------------------------------------------------------------------


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


REQUEST_ID = {
    "X-Request-ID": {
        "description": "The id under which the answer's prediction-log rows are stored.",
        "schema": {"type": "string"},
    }
}
REFUSALS: dict[int, str] = {
    401: "`X-API-Key` missing while the service has keys configured.",
    403: "`X-API-Key` not one of the configured keys.",
    408: "The request body did not arrive in time.",
    413: "Body larger than CHURN_MAX_BODY_BYTES, or too many items in it.",
    415: "A content type other than application/json.",
    422: "Invalid input: each broken rule named by field and rule.",
    429: "Rate limit of this key (or client address) exceeded; see Retry-After.",
    500: "A fault in the server, named in `error`; nothing answered is lost.",
    503: "Cannot answer now: no model loaded, overloaded, or storage unavailable.",
}
"""Every refusal a protected route can answer (serving/gateway.py and the routes)."""


@dataclass(frozen=True)
class Operation:
    """What the document says about one route, beyond BentoML's path and docstring."""

    operation_id: str
    tag: str
    answers: dict[int, tuple[str, dict[str, Any] | None]]
    body: dict[str, Any] | None = None
    protected: bool = True
    headers: dict[int, dict[str, Any]] = field(default_factory=dict)


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("post", "/predict"): Operation(
        "predict",
        "scoring",
        {200: ("The customer's prediction.", ref(Prediction))},
        body=ref(CustomerData),
        headers={
            200: {
                **REQUEST_ID,
                "X-Cache": {
                    "description": "`hit` if answered from the cache, else `miss`.",
                    "schema": {"type": "string", "enum": ["hit", "miss"]},
                },
            }
        },
    ),
    ("post", "/predict/batch"): Operation(
        "predict_batch",
        "scoring",
        {200: ("One prediction per customer, in request order.", ref(BatchPrediction))},
        body={
            "oneOf": [
                {"type": "array", "items": ref(CustomerData), "maxItems": MAX_BATCH_CUSTOMERS},
                {
                    "type": "object",
                    "properties": {
                        "customers": {
                            "type": "array",
                            "items": ref(CustomerData),
                            "maxItems": MAX_BATCH_CUSTOMERS,
                        }
                    },
                    "required": ["customers"],
                    "additionalProperties": False,
                },
            ]
        },
        headers={200: REQUEST_ID},
    ),
    ("post", "/feedback"): Operation(
        "send_feedback",
        "ground truth",
        {
            200: ("The labels are committed.", ref(LabelsReceived)),
            202: ("The database is down: the labels are spooled to disk.", ref(LabelsReceived)),
        },
        body={
            "oneOf": [
                ref(Label),
                {
                    "type": "array",
                    "items": ref(Label),
                    "minItems": 1,  # an empty array is a 422: no labels
                    "maxItems": MAX_LABELS_PER_REQUEST,
                },
            ]
        },
    ),
    ("delete", "/customers/{customer_id}"): Operation(
        "delete_customer",
        "privacy",
        {200: ("The customer's rows and cache entries are gone.", ref(CustomerDeleted))},
    ),
    ("get", "/health"): Operation(
        "health",
        "operations",
        {200: ("Status, model loaded and its version.", ref(Health))},
        protected=False,
    ),
}


def responses(method: str, operation: Operation) -> dict[str, Any]:
    """The operation's answers, then (protected routes) every refusal with its body."""
    answers: dict[str, Any] = {}
    refusals = {
        s: (d, ref(ValidationErrorBody) if s == 422 else ref(ErrorBody))
        for s, d in REFUSALS.items()
    }
    if not operation.protected:
        refusals = {}
    elif method != "post":
        refusals.pop(415)
    for status, (description, schema) in sorted({**refusals, **operation.answers}.items()):
        answer: dict[str, Any] = {"description": description}
        if schema is not None:
            answer["content"] = {"application/json": {"schema": schema}}
        headers = operation.headers.get(status, {})
        if status == 429:
            headers = {"Retry-After": {"description": "Seconds.", "schema": {"type": "integer"}}}
        if headers:
            answer["headers"] = headers
        answers[str(status)] = answer
    return answers


def describe(method: str, base: dict[str, Any], operation: Operation) -> dict[str, Any]:
    """One operation: BentoML's summary, description and parameters, our schemas."""
    kept = ("summary", "description", "parameters")
    described: dict[str, Any] = {k: copy.deepcopy(base[k]) for k in kept if k in base}
    for parameter in described.get("parameters", []):
        if parameter.get("name") == "customer_id":
            parameter["schema"] = copy.deepcopy(
                CustomerData.model_json_schema()["properties"]["customer_id"]
            )
    described |= {
        "operationId": operation.operation_id,
        "tags": [operation.tag],
        "security": [{SECURITY_SCHEME: []}] if operation.protected else [],
        "responses": responses(method, operation),
    }
    if operation.body is not None:
        described["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": operation.body}},
        }
    return described


def infrastructure(path: str, base: dict[str, Any]) -> dict[str, Any]:
    """BentoML's probes and /metrics, open to all; `/readyz` is 503 while not ready."""
    described = {k: v for k, v in base.items() if k in ("summary", "description")}
    name = path.strip("/").replace("/", "_") or "index"
    answers: dict[str, Any] = {"200": {"description": "OK"}}
    if path == "/readyz":
        answers["503"] = {"description": "Not ready: no model loaded, or the log cannot store."}
    if path == "/metrics":
        answers["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    return described | {
        "operationId": name,
        "tags": ["infrastructure"],
        "security": [],
        "responses": answers,
    }


# --- the document ---------------------------------------------------------------------------


def _to_openapi31(schema: Any) -> Any:
    """`{"minimum": x, "exclusiveMinimum": true}` (the 3.0 form core/schema.py asks for,
    for BentoML's 3.0 document) → `{"exclusiveMinimum": x}`, recursively."""
    if isinstance(schema, list):
        return [_to_openapi31(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {k: _to_openapi31(v) for k, v in schema.items()}
    if converted.get("exclusiveMinimum") is True and "minimum" in converted:
        converted["exclusiveMinimum"] = converted.pop("minimum")
    return converted


def extra_schema(columns: Sequence[ExtraColumn]) -> dict[str, Any]:
    """`extra` as the served model reads it: its extra columns by name and kind, no other
    member (the request path refuses any other, serving/scoring.py), required if the model
    requires one of them."""
    properties = {
        c.name: {"type": "number"} if c.kind == "number" else {"enum": list(c.categories)}
        for c in columns
    }
    described: dict[str, Any] = {
        "type": "object",
        "description": "The served model's extra inputs (a data profile's extra columns).",
        "properties": properties,
        "additionalProperties": False,
    }
    if required := [c.name for c in columns if c.required]:
        return described | {"required": required}
    return {"anyOf": [described, {"type": "null"}], "default": None}


def component_schemas(extras: tuple[ExtraColumn, ...] = ()) -> dict[str, Any]:
    """Every model the document refers to, by name, from the pydantic models themselves;
    a customer's `extra` object as the served model (`extras`) accepts it."""
    _, schema = models_json_schema(MODELS, ref_template=REF)
    components = _to_openapi31(schema.get("$defs", {}))
    customer = components[CustomerData.__name__]
    customer["properties"][EXTRA_FIELD] = extra_schema(extras)
    if any(c.required for c in extras):
        customer["required"] = [*customer["required"], EXTRA_FIELD]
    return dict(sorted(components.items()))


def product_document(base: dict[str, Any], extras: tuple[ExtraColumn, ...] = ()) -> dict[str, Any]:
    """The published document, from BentoML's (`Service.openapi_spec.asdict()`) and the
    served model's extra columns."""
    paths: dict[str, Any] = {}
    for path, item in base["paths"].items():
        for method, base_operation in item.items():
            operation = OPERATIONS.get((method, path))
            paths.setdefault(path, {})[method] = (
                describe(method, base_operation, operation)
                if operation
                else infrastructure(path, base_operation)
            )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": TITLE, "version": __version__, "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": component_schemas(extras),
            "securitySchemes": {
                SECURITY_SCHEME: {"type": "apiKey", "in": "header", "name": "X-API-Key"}
            },
        },
    }


# --- serving it -----------------------------------------------------------------------------


@cache
def _ui_page() -> bytes:
    """BentoML's Swagger UI page; it loads `./docs.json` and `./static_content/…`, which
    resolve the same from `/docs` as from `/`."""
    return SWAGGER_UI_PAGE.read_bytes()


class OpenAPIDocs:
    """ASGI middleware: `GET /docs.json` is the product's document, `GET /docs` its UI.

    The document is built on first request, once per worker and served model (`extras`:
    the loaded model's extra columns; the routes do not change).
    """

    def __init__(
        self,
        app: ASGIApp,
        spec: Callable[[], dict[str, Any]],
        extras: Callable[[], tuple[ExtraColumn, ...]] = tuple,
    ) -> None:
        self.app = app
        self.spec = spec
        self.extras = extras
        self._documents: dict[tuple[ExtraColumn, ...], bytes] = {}

    def document(self) -> bytes:
        extras = self.extras()
        if extras not in self._documents:
            self._documents[extras] = orjson.dumps(product_document(self.spec(), extras))
        return self._documents[extras]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")  # exactly: from `/docs/` the page's links would break
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
        elif path == "/docs.json":
            await self._send(scope, send, self.document(), b"application/json")
        elif path == "/docs":
            await self._send(scope, send, _ui_page(), b"text/html; charset=utf-8")
        else:
            await self.app(scope, receive, send)

    @staticmethod
    async def _send(scope: Scope, send: Send, payload: bytes, content_type: bytes) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else payload}
        )
