"""The BentoML service: `bentoml serve service:ChurnService`.

How a request is answered (the measurements behind this layout are in BENCHMARKS.md):

1. `serving/gateway.py`, an ASGI middleware in every worker, is the HTTP front door of the
   protected routes: API key, content type, body size and shape.
2. `serving/request_path.py` answers `/predict` and `/predict/batch`: parse and validate →
   cache → adaptive batch (`serving/batcher.py`, BentoML's own dispatcher) → features →
   booster (`serving/scoring.py`) → answer → log (`monitoring/`).
3. The API methods below declare those routes to BentoML (its clients discover them in
   `/schema.json`) and call the same request path when a caller reaches them in-process.
   The front door answers HTTP requests before BentoML's per-request stack, which would
   cost ≈ 1.3 ms of CPU each (BENCHMARKS.md).

`/health` and deletions are FastAPI routes mounted on the service.
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
from http import HTTPStatus
from typing import Any

import bentoml
import orjson
from fastapi import FastAPI
from starlette.responses import JSONResponse

from core import __version__
from core.pipeline.extras import ExtraColumn
from core.schema import BatchPrediction, CustomerData, Health, Prediction
from core.settings import get_settings
from serving import request_path
from serving.adapters import Adapters, build_adapters
from serving.api_specs import CustomerInput, LabelInput, body_of
from serving.feedback_api import delete_customer_everywhere, receive_labels
from serving.gateway import Gateway
from serving.model_loading import find_model, load_model
from serving.model_watcher import follow_registry
from serving.openapi import LabelsReceived, OpenAPIDocs
from serving.request_path import Answer, Caller
from serving.route_metrics import label_routes_by_template

logger = logging.getLogger("churn.service")
# BentoML's server logging keeps the root logger at WARNING; the product's own INFO lines
# (model loaded, rejected requests by field) belong in the server log too.
logging.getLogger("churn").setLevel(logging.INFO)
label_routes_by_template()  # `/metrics` labels: route templates, never raw paths
settings = get_settings()

SCORING_ROUTES = ["/predict", "/predict/batch"]
"""Not traced by BentoML's OpenTelemetry middleware: a span per request cost ≈ 20 % of the
worker's time at 64 clients (BENCHMARKS.md)."""

health_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@bentoml.asgi_app(health_app, path="/")
@bentoml.service(
    name="churn_service",
    traffic={"timeout": 30},
    # `churn build` leaves the count out of the Bento: it is resolved where it is served.
    **({} if settings.bento_build else {"workers": settings.workers}),
    threads=1,
    metrics={"enabled": True},
    logging={"access": {"enabled": settings.access_log}},
    tracing={"excluded_urls": SCORING_ROUTES},
)
class ChurnService:
    """Churn probability, risk level and reasons for each customer."""

    # Declared only when the store has a readable model: BentoML refuses to start (or
    # build) a service whose declared model is missing, and an empty store or a broken
    # model.yaml must still serve /health (`model_problem` says why there is none).
    model_ref, model_problem = find_model()

    def __init__(self) -> None:
        self.started = time.monotonic()
        # Files verified against their checksums before anything is built from them.
        model, load_error = load_model(lambda: self.model_ref, self.model_problem)
        settings = get_settings()
        self.adapters: Adapters = build_adapters(settings, model, load_error)
        # The registry's champion and challenger replace the store's model before the
        # first request, and whenever the registry's assignment changes.
        parts = self.adapters
        self.watcher = follow_registry(lambda: parts.served, parts.serve, settings, parts.errors)
        # Everything loaded so far (BentoML, pydantic, XGBoost, the model) lives for the
        # whole process: take it out of the collector's sight, or every full collection
        # walks it again under load (p99 at 64 clients 379 → 131 ms, BENCHMARKS.md).
        gc.freeze()

    @bentoml.on_shutdown
    def flush_prediction_log(self) -> None:
        """Graceful shutdown (SIGTERM): every buffered log row reaches the database or,
        if it is down, the on-disk spool that the next start replays."""
        if self.watcher is not None:
            self.watcher.stop()
        self.adapters.close()

    def __is_ready__(self) -> bool:
        """`/readyz`: 200 only while this worker can score (a model loaded, the
        prediction log able to store), so a load balancer sends it no traffic otherwise."""
        return self.adapters.readiness_problem() is None

    @bentoml.api(route="/predict", input_spec=CustomerInput, output_spec=Prediction)
    async def predict(self, **customer: Any) -> Prediction:
        """Score one customer (concurrent requests are merged into one batch)."""
        body = body_of(CustomerData, customer)
        answer = await request_path.predict(body, _in_process(), self.adapters, time.perf_counter())
        return Prediction.model_validate_json(_answered(answer))

    @bentoml.api(route="/predict/batch")
    async def predict_batch(self, customers: list[CustomerData]) -> BatchPrediction:
        """Score up to 1,000 customers in one vectorised pass."""
        body = orjson.dumps({"customers": [c.model_dump(mode="json") for c in customers]})
        answer = await request_path.predict_batch(
            body, _in_process(), self.adapters, time.perf_counter()
        )
        return BatchPrediction.model_validate_json(_answered(answer))

    @bentoml.api(route="/feedback", input_spec=LabelInput, output_spec=LabelsReceived)
    async def feedback(self, **label: Any) -> LabelsReceived:
        """Ground truth for one customer (over HTTP, also a JSON array of labels). 200
        once stored; 202 if the database is down and it was spooled to disk instead."""
        status, body = await receive_labels(self.adapters, body_of(LabelInput, label))
        if status >= 300:
            raise _refusal(status, body)
        return LabelsReceived.model_validate(body)

    @health_app.delete("/customers/{customer_id}")
    async def delete_customer(self, customer_id: str) -> JSONResponse:
        """Right to deletion: the customer's logged predictions, labels and cache entries."""
        status, body = await delete_customer_everywhere(self.adapters, customer_id)
        return JSONResponse(body, status_code=status)

    @health_app.get("/health")
    def health(self) -> Health:
        """Liveness plus whether a model is loaded, and which (this worker's)."""
        served = self.adapters.served
        return Health(
            status="healthy" if served else "unhealthy",
            model_loaded=served is not None,
            model_version=served.champion.version if served else None,
            challenger_version=served.challenger.version if served and served.challenger else None,
            challenger_share=served.share if served else 0.0,
            uptime_seconds=time.monotonic() - self.started,
            version=__version__,
            detail=self.adapters.load_error,
        )


def current_adapters() -> Adapters | None:
    """The adapters of this worker's service instance (None until BentoML has built it).
    `bentoml.get_current_service` is how BentoML hands its own class views the instance."""
    try:
        service: ChurnService = bentoml.get_current_service()
    except bentoml.exceptions.BentoMLException:
        return None
    return getattr(service, "adapters", None)


def served_extras(adapters: Adapters | None) -> tuple[ExtraColumn, ...]:
    """The loaded model's extra columns: what `/docs.json` documents for `extra`."""
    model = adapters.model if adapters else None
    return model.predictor.extras if model else ()


def _in_process() -> Caller:
    """A caller inside this process: rate-limited as one client, like any other."""
    return Caller(client_id="in-process", address="in-process", request_id=uuid.uuid4().hex)


def _answered(answer: Answer) -> bytes:
    """The answer's body, or the refusal raised as the BentoML exception of its status."""
    if answer.status >= 300:
        raise _refusal(answer.status, orjson.loads(answer.body))
    return answer.body


def _refusal(status: int, body: dict[str, Any]) -> bentoml.exceptions.BentoMLException:
    return bentoml.exceptions.BentoMLException(str(body), error_code=HTTPStatus(status))


# The first middleware added is the outermost: the front door sees every request first.
ChurnService.add_asgi_middleware(Gateway, adapters_of=current_adapters)  # type: ignore[attr-defined]
# `/docs.json` is the product's document (serving/openapi.py), `/docs` its UI.
ChurnService.add_asgi_middleware(  # type: ignore[attr-defined]
    OpenAPIDocs,
    spec=lambda: ChurnService.openapi_spec.asdict(),  # type: ignore[attr-defined]
    extras=lambda: served_extras(current_adapters()),
)
