"""The BentoML service: `bentoml serve service:ChurnService`.

Topology (measured, see BENCHMARKS.md): one service, one process per worker. The
`Gateway` ASGI middleware (serving/gateway.py) answers `/predict` and `/predict/batch`
itself: concurrent `/predict` requests are merged by BentoML's adaptive dispatcher
(serving/batcher.py) and scored in one vectorised pass, without BentoML's per-request
HTTP stack. A separate model service behind `bentoml.depends` added a network hop per
request and, at default settings, shed load as 503s.

The API methods below declare the routes and their schema (OpenAPI), load the model,
and answer what the gateway passes on: feedback, deletions, health, and scoring
requests when no model is loaded.
"""

from __future__ import annotations

import gc
import logging
import time

import bentoml
from _bentoml_sdk.io_models import IOMixin
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse

from core import __version__
from core.schema import BatchPrediction, CustomerData, Health, Prediction
from core.settings import get_settings
from serving.errors import ValidationErrorsAs422, quiet_validation_errors
from serving.feedback_api import delete_customer_everywhere, receive_labels
from serving.gateway import Gateway
from serving.model_loading import find_model, load_model
from serving.openapi import OpenAPIDocs
from serving.route_metrics import label_routes_by_template
from serving.runtime import ServingRuntime, build_runtime, install
from serving.scoring import LoadedModel

logger = logging.getLogger("churn.service")
# BentoML's server logging keeps the root logger at WARNING; the product's own INFO lines
# (model loaded, rejected requests by field) belong in the server log too.
logging.getLogger("churn").setLevel(logging.INFO)
quiet_validation_errors()
label_routes_by_template()  # `/metrics` labels: route templates, never raw paths
settings = get_settings()


class PredictRequest(IOMixin, CustomerData):
    """The flat body of `/predict`: one customer, not wrapped in another key."""


PredictRequest.__root_input__ = True  # type: ignore[attr-defined]  # one argument, whole body


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


SCORING_ROUTES = ["/predict", "/predict/batch"]
"""Not traced by BentoML's OpenTelemetry middleware: a span per request cost ≈ 20 % of the
worker's time at 64 clients (BENCHMARKS.md), and the gateway answers these routes itself."""

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
        self.model: LoadedModel | None
        self.load_error: str | None
        self.model, self.load_error = load_model(lambda: self.model_ref, self.model_problem)
        self.runtime: ServingRuntime = build_runtime(settings, self.model)
        install(self.runtime)
        # Everything loaded so far (BentoML, pydantic, XGBoost, the model) lives for the
        # whole process: take it out of the collector's sight, or every full collection
        # walks it again under load (p99 at 64 clients 379 → 131 ms, BENCHMARKS.md).
        gc.freeze()

    @bentoml.on_shutdown
    def flush_prediction_log(self) -> None:
        """Graceful shutdown (SIGTERM): every buffered log row reaches the database or,
        if it is down, the on-disk spool that the next start replays."""
        install(None)
        self.runtime.close()

    def __is_ready__(self) -> bool:
        """`/readyz`: 200 only while this worker can score (a model loaded, the
        prediction log able to store), so a load balancer sends it no traffic otherwise."""
        return self.runtime.readiness_problem(self.load_error) is None

    def unavailable(self) -> JSONResponse:
        """The 503 for a scoring request that reaches BentoML's API methods."""
        reason = self.load_error or (
            "scoring is answered by the HTTP gateway (serving/gateway.py); "
            "in Python, use serving.scoring.score_batch"
        )
        return error_response(503, reason)

    # The two scoring APIs declare the routes and their schema (OpenAPI). While a model
    # is loaded the gateway answers both itself (validation, cache, scoring, prediction
    # log), so what reaches these methods has no model.
    @bentoml.api(route="/predict", input_spec=PredictRequest, output_spec=Prediction)
    def predict(self, customer: CustomerData) -> Prediction:
        """Score one customer (concurrent requests are merged into one batch)."""
        return self.unavailable()  # type: ignore[return-value]

    @bentoml.api(route="/predict/batch")
    def predict_batch(self, customers: list[CustomerData], /) -> BatchPrediction:
        """Score up to 1,000 customers sent as one JSON array."""
        return self.unavailable()  # type: ignore[return-value]

    @health_app.post("/feedback")
    async def feedback(self, request: Request) -> JSONResponse:
        """Ground truth: one label or a JSON array of them (customer_id, churned,
        observed_date). 200 once stored; 202 if the database is down and the labels
        were written to the on-disk spool instead."""
        status, body = await receive_labels(self.runtime, await request.body())
        return JSONResponse(body, status_code=status)

    @health_app.delete("/customers/{customer_id}")
    async def delete_customer(self, customer_id: str) -> JSONResponse:
        """Right to deletion: the customer's logged predictions, labels and cache entries."""
        status, body = await delete_customer_everywhere(self.runtime, customer_id)
        return JSONResponse(body, status_code=status)

    @health_app.get("/health")
    def health(self) -> Health:
        """Liveness plus whether a model is loaded, and which."""
        return Health(
            status="healthy" if self.model else "unhealthy",
            model_loaded=self.model is not None,
            model_version=self.model.version if self.model else None,
            uptime_seconds=time.monotonic() - self.started,
            version=__version__,
            detail=self.load_error,
        )


# The first middleware added is the outermost: the gateway sees every request first.
ChurnService.add_asgi_middleware(Gateway)  # type: ignore[attr-defined]
ChurnService.add_asgi_middleware(ValidationErrorsAs422)  # type: ignore[attr-defined]
# `/docs.json` is the product's document (serving/openapi.py), `/docs` its UI.
ChurnService.add_asgi_middleware(  # type: ignore[attr-defined]
    OpenAPIDocs,
    spec=lambda: ChurnService.openapi_spec.asdict(),  # type: ignore[attr-defined]
)
