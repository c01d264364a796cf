"""The adapters of one worker: API keys, rate limits, cache, batcher, prediction log, model.

`build_adapters` assembles them from the settings when the service starts (service.py's
`__init__`); the request path (serving/request_path.py) and the HTTP front door
(serving/gateway.py) receive them as an argument. Methods here are the small policies that
tie two adapters together (a rate-limit refusal's 429, the cache entry of a model).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from core.schema import CustomerData
from core.settings import Settings
from monitoring.identity import customer_hash, load_id_secret
from monitoring.journal import NotDurable
from monitoring.prediction_log import LogStats, PredictionLog
from monitoring.records import PredictionRecord
from monitoring.spool import waiting_bytes
from serving.auth import AuthResult, check_api_key, key_id, load_api_keys
from serving.auth_limit import AuthFailureLimit, refusal_body
from serving.batcher import PredictBatcher
from serving.cache import Cache, cache_key, cache_value, make_cache
from serving.metrics import (
    AuthFailure,
    count_auth_blocked,
    count_auth_failure,
    count_log_rows,
    set_log_pending_rows,
    set_spool_bytes,
)
from serving.model_metrics import MonitoringGauges
from serving.process_metrics import ProcessReporter
from serving.rate_limit import (
    Admission,
    RateLimiter,
    Refusal,
    check_and_get,
    make_rate_limiter,
    parse_rate,
)
from serving.redis_link import RedisLink, make_link
from serving.scoring import SHADOW_KEY, LoadedModel, ScoredBatch, extra_field_problems
from serving.served_models import ErrorWindow, ServedModels, score_served

logger = logging.getLogger("churn.runtime")

JsonAnswer = tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]
"""A small JSON answer: status, body, extra headers."""


@dataclass
class Adapters:
    """What one worker's request path works with; see `build_adapters`."""

    settings: Settings
    api_keys: tuple[bytes, ...]
    limiter: RateLimiter
    cache: Cache | None
    log: PredictionLog
    id_secret: bytes
    link: RedisLink | None = None
    auth_failures: AuthFailureLimit | None = None
    """Failed authentications per client address (None: keys are off, nothing can fail)."""
    served: ServedModels | None = None
    """The models this worker answers with (swapped whole by serving/model_watcher.py)."""
    load_error: str | None = None
    """Why no model is loaded (None: one is, or none was asked for)."""
    batcher: PredictBatcher | None = None
    predicting: int = 0
    """`/predict` requests of this worker between arrival and answer."""
    monitoring: MonitoringGauges | None = None
    """The monitoring jobs' latest results, exported on `/metrics`."""
    errors: ErrorWindow = field(default_factory=lambda: ErrorWindow(100))
    """Each served model's recent scoring failures (the error-rate rollback)."""
    _reported: LogStats = field(default_factory=LogStats)
    _process: ProcessReporter = field(default_factory=ProcessReporter)
    _reported_at: float = 0.0

    @property
    def model(self) -> LoadedModel | None:
        """The champion: what answers every customer outside an experiment."""
        return self.served.champion if self.served else None

    @property
    def model_version(self) -> str | None:
        return self.served.champion.version if self.served else None

    def serve(self, served: ServedModels) -> None:
        """Answer with `served` from the next batch on (one reference swap)."""
        self.served = served
        self.load_error = None
        if self.monitoring is not None and self.monitoring.version != served.champion.version:
            self.monitoring.follow(served.champion.version)

    @property
    def max_body_bytes(self) -> int:
        return self.settings.max_body_bytes

    @property
    def rate_text(self) -> str:
        return self.settings.rate_limit

    def authenticate(self, presented: bytes | None) -> AuthResult:
        """'ok', 'missing', 'wrong' or 'disabled' (no keys configured)."""
        return check_api_key(presented, self.api_keys)

    def client_id(self, presented: bytes | None, address: str) -> str:
        """Who the rate limit counts: the key's fingerprint, or the peer address (as
        `serving.auth_limit.client_address` gives it: one rule for both limits)."""
        if presented and self.api_keys:
            return key_id(presented)
        return f"ip:{address}"

    def cache_key(self, canonical: bytes) -> str | None:
        """The cache entry for a canonical request under the served model, if caching:
        keyed by the model's version and content checksum, so files edited or restored
        under the same version never see each other's answers."""
        if self.cache is None or self.served is None:
            return None
        return cache_key(self.served.cache_scope, canonical)

    async def admit(self, client: str, key: str | None, address: str) -> Admission:
        """Rate-limit decision and, when allowed, the cached answer (one Redis trip); an
        address shut out for failed authentications is refused first, in the same trip."""
        guard = None
        if self.auth_failures is not None:
            here = self.auth_failures.blocked_here(address)
            if not here.allowed:
                count_auth_blocked()
                return Admission(False, here.retry_after, None, None, "auth_failures")
            guard = self.auth_failures.guard(address)
        admission = await check_and_get(self.limiter, self.cache, client, key, guard)
        if admission.refused_by == "auth_failures":
            count_auth_blocked()
        return admission

    async def failed_authentication(
        self, verdict: AuthFailure, address: str, status: int, message: str
    ) -> JsonAnswer:
        """A missing or wrong key: its 401/403, recorded against the address; a 429 once
        the address is over its failure limit (the verdict on the key stays unknown)."""
        if self.auth_failures is None:
            return status, {"error": message}, []
        decision = await self.auth_failures.on_failure(address)
        if not decision.allowed:
            count_auth_blocked()
            return self.too_many(decision.refused_by, decision.retry_after)
        count_auth_failure(verdict)
        return status, {"error": message}, []

    async def before_admission(self, address: str, status: int, message: str) -> JsonAnswer:
        """An answer given before admission (413, 415); a 429 instead for an address over
        its failure limit (asking Redis too), or the status would tell that a key is right."""
        if self.auth_failures is not None:
            decision = await self.auth_failures.blocked(address)
            if not decision.allowed:
                count_auth_blocked()
                return self.too_many(decision.refused_by, decision.retry_after)
        return status, {"error": message}, []

    def too_many(self, refused_by: Refusal | None, retry_after: int) -> JsonAnswer:
        """The 429 with `Retry-After`: the limit that was hit and when to retry."""
        failure_text = self.settings.auth_failure_limit
        body = refusal_body(refused_by, retry_after, self.rate_text, failure_text)
        return 429, body, [(b"retry-after", str(retry_after).encode())]

    def extra_problems(self, customers: Sequence[CustomerData]) -> dict[int, list[dict[str, str]]]:
        """Customers whose `extra` object does not fit the served model: position → problems."""
        return extra_field_problems(self.model, customers) if self.model else {}

    def score(self, customers: Sequence[CustomerData], started: float | None = None) -> ScoredBatch:
        """Score validated customers now, in this thread (the batcher's scoring function)."""
        if self.served is None:
            raise RuntimeError("no model is loaded")
        return score_served(
            self.served, customers, self.settings, self.hash_id, self.errors, started
        )

    def score_rows(self, customers: Sequence[CustomerData]) -> list[dict[str, Any]]:
        """The batcher's rows, with the shadow score for the log during an experiment."""
        return self.score(customers).rows(with_shadow=True)

    async def score_in_background(
        self, customers: Sequence[CustomerData], started: float
    ) -> ScoredBatch:
        """A batch scored in the scoring thread (the event loop stays free)."""
        if self.batcher is None:
            return self.score(customers, started)
        return await self.batcher.run(self.score, customers, started)

    def no_model_reason(self) -> str:
        return self.load_error or "no model is loaded"

    def remember(
        self,
        key: str,
        prediction: dict[str, Any],
        customer_hash: str,
        shadow: list[Any] | None = None,
    ) -> None:
        """Keep a scored answer in the cache, without the raw customer id; during an
        experiment with the shadow score, so a cached answer is logged paired too."""
        if self.cache is not None:
            kept = prediction if shadow is None else {**prediction, SHADOW_KEY: shadow}
            self.cache.remember(key, cache_value(kept), customer_hash)

    def hash_id(self, customer_id: str) -> str:
        return customer_hash(customer_id, self.id_secret)

    async def forget_customer(self, customer_id: str) -> int:
        """Drop every cache entry of a customer (right to deletion)."""
        if self.cache is None:
            return 0
        return await self.cache.forget_customer(self.hash_id(customer_id))

    async def write_log(self, records: list[PredictionRecord]) -> None:
        """Hand rows to the log and, once a second, refresh its metrics. With the journal
        on, returns once the rows are on disk (raises NotDurable if they cannot be): the
        caller answers only then, so a killed worker loses no answered prediction."""
        try:
            if self.log.group_commit is not None:
                await self.log.group_commit.commit(records)
            else:
                self.log.log(records)
        finally:
            self._report_now_and_then()

    def durability_problem(self) -> str | None:
        """Why a prediction answered now could not be logged (None: it can be)."""
        problem = self.log.durability_problem()
        if problem is not None:
            self._report_now_and_then()  # no rows flow: keep the metrics current anyway
        return problem

    def check_durable(self) -> None:
        """Raise NotDurable (with the reason) when a prediction answered now could not be
        logged: the caller answers 503 rather than a 200 whose row would be lost."""
        problem = self.durability_problem()
        if problem is not None:
            raise NotDurable(problem)

    def _report_now_and_then(self) -> None:
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
        count_log_rows("lost", stats.lost - before.lost)
        set_log_pending_rows(stats.pending)
        self._reported = stats
        self._process.report(self.log.engine, self.readiness_problem() is None)

    async def before_scrape(self) -> None:
        """What `/metrics` must show fresh: this worker's log and process figures and the
        monitoring jobs' latest results (read from the database at most every
        `CHURN_MONITORING_REFRESH_S`)."""
        self.report_log_metrics()
        set_spool_bytes(await anyio.to_thread.run_sync(waiting_bytes, self.settings.spool_dir))
        if self.monitoring is not None:
            await self.monitoring.refresh()

    def readiness_problem(self) -> str | None:
        """Why this worker cannot serve a scoring request right now (None: it can).

        Ready means "can score": a model is loaded and the prediction log can make the
        rows it is handed durable.
        """
        if self.model is None:
            return self.no_model_reason()
        return self.log.durability_problem()

    def close(self, timeout: float = 30.0) -> None:
        """Graceful shutdown: everything buffered is written (or spooled to disk)."""
        if self.batcher is not None:
            self.batcher.close()
        self.log.close(timeout)


def build_adapters(
    settings: Settings, model: LoadedModel | None, load_error: str | None = None
) -> Adapters:
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
    failures = parse_rate(settings.auth_failure_limit)
    parts = Adapters(
        settings=settings,
        served=ServedModels(model) if model else None,
        load_error=load_error,
        api_keys=api_keys,
        limiter=make_rate_limiter(rate, link),
        cache=make_cache(settings, link),
        log=log,
        id_secret=secret,
        link=link,
        auth_failures=AuthFailureLimit.build(failures, link) if api_keys else None,
    )
    parts.errors = ErrorWindow(settings.rollback_min_answers)
    if model is not None or settings.model_source == "registry":
        # A worker started without a model may get one from the registry while running.
        version = model.version if model else ""
        refresh_s = settings.monitoring_refresh_s
        parts.monitoring = MonitoringGauges(log.engine, version, refresh_s)
        parts.batcher = PredictBatcher(
            parts.score_rows, settings.max_batch_size, settings.max_latency_ms
        )
    return parts
