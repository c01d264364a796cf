"""Everything a worker needs besides the model: keys, limits, cache, prediction log.

One `ServingRuntime` per worker process, built by the service at start-up and found by
the gateway middleware through `current_runtime()` (the middleware is constructed by
BentoML before the service instance exists, so it cannot be handed the runtime).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter
from starlette.types import Scope

from monitoring.identity import customer_hash, load_id_secret
from monitoring.prediction_log import LogStats, PredictionLog
from monitoring.records import PredictionRecord
from serving.auth import AuthResult, check_api_key, key_id, load_api_keys
from serving.batcher import PredictBatcher
from serving.cache import Cache, cache_key, cache_value, make_cache
from serving.metrics import count_log_rows, set_log_pending_rows
from serving.rate_limit import RateLimiter, check_and_get, make_rate_limiter, parse_rate
from serving.redis_link import RedisLink, make_link
from training.config import Settings
from training.schema import ID_COLUMN, CustomerData
from training.scoring import LoadedModel, ScoredBatch, extra_field_problems, score_batch

logger = logging.getLogger("churn.runtime")

_current: ServingRuntime | None = None
_customer_fields = TypeAdapter(list[CustomerData])


def current_runtime() -> ServingRuntime | None:
    """The runtime of this worker, once the service has started."""
    return _current


def install(runtime: ServingRuntime | None) -> None:
    global _current
    _current = runtime


@dataclass
class ServingRuntime:
    """Per-worker state of the production path; see `build_runtime`."""

    settings: Settings
    model_version: str | None
    api_keys: tuple[bytes, ...]
    limiter: RateLimiter
    cache: Cache | None
    log: PredictionLog
    id_secret: bytes
    link: RedisLink | None = None
    model: LoadedModel | None = None
    batcher: PredictBatcher | None = None
    predicting: int = 0
    """`/predict` requests of this worker between arrival and answer."""
    _reported: LogStats = field(default_factory=LogStats)
    _reported_at: float = 0.0

    @property
    def max_body_bytes(self) -> int:
        return self.settings.max_body_bytes

    @property
    def rate_text(self) -> str:
        return self.settings.rate_limit

    def authenticate(self, presented: bytes | None) -> AuthResult:
        """'ok', 'missing', 'wrong' or 'disabled' (no keys configured)."""
        return check_api_key(presented, self.api_keys)

    def client_id(self, presented: bytes | None, scope: Scope) -> str:
        """Who the rate limit counts: the key's fingerprint, or the peer address."""
        if presented and self.api_keys:
            return key_id(presented)
        client = scope.get("client") or ("unknown", 0)
        return f"ip:{client[0]}"

    def cache_key(self, canonical: bytes) -> str | None:
        """The cache entry for a canonical request under the served model, if caching."""
        if self.cache is None or self.model_version is None:
            return None
        return cache_key(self.model_version, canonical)

    async def admit(self, client: str, key: str | None) -> tuple[bool, int, bytes | None]:
        """Rate-limit decision and, when allowed, the cached answer (one Redis trip)."""
        admission = await check_and_get(self.limiter, self.cache, client, key)
        return admission.allowed, admission.retry_after, admission.cached

    def extra_problems(self, customers: Sequence[CustomerData]) -> dict[int, list[dict[str, str]]]:
        """Customers whose `extra` object does not fit the served model: position → problems."""
        return extra_field_problems(self.model, customers) if self.model else {}

    def score_rows(self, customers: Sequence[CustomerData]) -> list[dict[str, Any]]:
        """Score validated customers now, in this thread: one `Prediction` dict each."""
        return self.score(customers).rows()

    def score(self, customers: Sequence[CustomerData], started: float | None = None) -> ScoredBatch:
        if self.model is None:
            raise RuntimeError("no model is loaded")
        return score_batch(self.model, customers, self.settings, started)

    async def score_in_background(
        self, customers: Sequence[CustomerData], started: float
    ) -> ScoredBatch:
        """A `/predict/batch` request, scored in the scoring thread (the event loop stays free)."""
        if self.batcher is None:
            return self.score(customers, started)
        return await self.batcher.run(self.score, customers, started)

    def hash_id(self, customer_id: str) -> str:
        return customer_hash(customer_id, self.id_secret)

    def _record(
        self,
        hashed_id: str,
        features: dict[str, Any],
        prediction: dict[str, Any],
        request_id: str,
        latency_ms: float,
        cache: str,
        endpoint: str = "predict",
    ) -> PredictionRecord:
        return PredictionRecord(
            request_id=request_id,
            customer_hash=hashed_id,
            model_version=str(prediction.get("model_version", self.model_version)),
            features=features,
            churn_probability=float(prediction["churn_probability"]),
            will_churn=bool(prediction["will_churn"]),
            risk_level=str(prediction["risk_level"]),
            latency_ms=latency_ms,
            cache=cache,
            endpoint=endpoint,
        )

    def after_prediction(
        self,
        customer: CustomerData,
        features: dict[str, Any],
        prediction: dict[str, Any],
        key: str | None,
        request_id: str,
        latency_ms: float,
    ) -> None:
        """A scored `/predict` (`features`: the request's fields without the id): remember
        the answer in the cache (without the raw id) and log it."""
        hashed_id = self.hash_id(customer.customer_id)
        if key is not None and self.cache is not None:
            self.cache.remember(key, cache_value(prediction), hashed_id)
        cache = "miss" if key is not None else "none"
        self._write([self._record(hashed_id, features, prediction, request_id, latency_ms, cache)])

    def log_hit(
        self,
        customer: CustomerData,
        features: dict[str, Any],
        prediction: dict[str, Any],
        request_id: str,
        latency_ms: float,
    ) -> None:
        """A `/predict` answered from the cache is still a served prediction: log it."""
        hashed_id = self.hash_id(customer.customer_id)
        self._write([self._record(hashed_id, features, prediction, request_id, latency_ms, "hit")])

    def after_batch(
        self,
        customers: Sequence[CustomerData],
        predictions: Sequence[dict[str, Any]],
        request_id: str,
        latency_ms: float,
    ) -> None:
        """A scored `/predict/batch`: one log row per customer."""
        fields = _customer_fields.dump_python(
            list(customers), mode="json", exclude_none=True, exclude={"__all__": {ID_COLUMN}}
        )
        self._write(
            [
                self._record(
                    self.hash_id(customer.customer_id),
                    features,
                    prediction,
                    request_id,
                    latency_ms,
                    "none",
                    "batch",
                )
                for customer, features, prediction in zip(
                    customers, fields, predictions, strict=True
                )
            ]
        )

    async def forget_customer(self, customer_id: str) -> int:
        """Drop every cache entry of a customer (right to deletion)."""
        if self.cache is None:
            return 0
        return await self.cache.forget_customer(self.hash_id(customer_id))

    def _write(self, records: list[PredictionRecord]) -> None:
        """Hand rows to the log (never blocks) and, once a second, refresh its metrics."""
        self.log.log(records)
        now = time.monotonic()
        if now - self._reported_at >= 1.0:
            self._reported_at = now
            self.report_log_metrics()

    def report_log_metrics(self) -> None:
        """Move the log's counters into Prometheus (deltas since the last report)."""
        stats, before = self.log.stats(), self._reported
        count_log_rows("written", stats.written - before.written)
        count_log_rows("spooled", stats.spooled - before.spooled)
        count_log_rows("replayed", stats.replayed - before.replayed)
        set_log_pending_rows(stats.pending)
        self._reported = stats

    def readiness_problem(self, load_error: str | None = None) -> str | None:
        """Why this worker cannot serve a scoring request right now (None: it can).

        Ready means "can score": a model is loaded and the prediction log can make the
        rows it is handed durable.
        """
        if self.model is None:
            return load_error or "no model is loaded"
        return self.log.durability_problem()

    def close(self, timeout: float = 30.0) -> None:
        """Graceful shutdown: everything buffered is written (or spooled to disk)."""
        if self.batcher is not None:
            self.batcher.close()
        self.log.close(timeout)


def build_runtime(settings: Settings, model: LoadedModel | None) -> ServingRuntime:
    """Assemble the runtime from the settings; warns loudly when auth is off."""
    api_keys = load_api_keys(settings.api_keys)
    if not api_keys:
        logger.warning(
            "CHURN_API_KEYS is not set: authentication is DISABLED; anyone who can reach "
            "this port can call /predict, /feedback and delete customers"
        )
    link = make_link(settings)
    rate = parse_rate(settings.rate_limit)
    secret = load_id_secret(settings)
    log = PredictionLog.from_settings(settings)
    runtime = ServingRuntime(
        settings=settings,
        model_version=model.version if model else None,
        model=model,
        api_keys=api_keys,
        limiter=make_rate_limiter(rate, link),
        cache=make_cache(settings, link),
        log=log,
        id_secret=secret,
        link=link,
    )
    if model is not None:
        runtime.batcher = PredictBatcher(
            runtime.score_rows, settings.max_batch_size, settings.max_latency_ms
        )
    return runtime
