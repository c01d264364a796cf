"""Prometheus metrics of the serving layer, created on first use.

``prometheus_client`` is imported inside :func:`_metrics`, not at module import: BentoML sets
``PROMETHEUS_MULTIPROC_DIR`` in each worker after the service module is imported, and a
client imported before that runs in single-process mode, so ``/metrics`` would never see
these series. This is what ``bentoml.metrics`` does too (deprecated in BentoML 1.4.40 in
favour of ``prometheus_client`` used this way). Importing this module is therefore free and
safe outside a server, e.g. in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, get_args

import numpy as np

from serving.scoring import RISK_LEVELS

CacheResult = Literal["hit", "miss", "error", "off"]
AuthFailure = Literal["missing", "wrong"]
LogRowOutcome = Literal["written", "spooled", "replayed", "lost"]
Endpoint = Literal["predict", "batch"]
ErrorKind = Literal[
    "auth",
    "timeout",
    "too_large",
    "content_type",
    "validation",
    "rate_limited",
    "internal",
    "unavailable",
    "other",
]

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds; from 1 ms, since a cached `/predict` answers in about that (BENCHMARKS.md)."""
PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
ERROR_KINDS: dict[int, ErrorKind] = {
    401: "auth",
    403: "auth",
    408: "timeout",
    413: "too_large",
    415: "content_type",
    422: "validation",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}
"""The `kind` label of `churn_errors_total` by HTTP status (any other 4xx/5xx: `other`)."""


@dataclass(frozen=True)
class _Metrics:
    cache_requests: Any
    redis_errors: Any
    rate_limited: Any
    auth_failures: Any
    auth_blocked: Any
    log_rows: Any
    log_pending: Any
    batch_size: Any
    predictions: Any
    latency: Any
    probability: Any
    errors: Any
    spool_bytes: Any


@cache
def _metrics() -> _Metrics:
    """Create (once per process) and register the metric objects."""
    from prometheus_client import Counter, Gauge, Histogram

    metrics = _Metrics(
        cache_requests=Counter(
            "churn_cache_requests",
            "Prediction cache look-ups by result (off: the cache is disabled).",
            ["result"],
        ),
        redis_errors=Counter(
            "churn_redis_errors", "Redis calls that failed or timed out (served by fallbacks)."
        ),
        rate_limited=Counter("churn_rate_limited", "Requests refused with 429."),
        auth_failures=Counter(
            "churn_auth_failures", "Requests refused with 401, by reason.", ["reason"]
        ),
        auth_blocked=Counter(
            "churn_auth_blocked",
            "Requests refused with 429 because their address failed authentication too often.",
        ),
        log_rows=Counter(
            "churn_prediction_log_rows",
            "Prediction-log rows: written to the database, spooled to disk, replayed from it, "
            "lost (could be neither written nor spooled).",
            ["outcome"],
        ),
        # livesum: the rows still waiting in all live workers, not one series per pid.
        log_pending=Gauge(
            "churn_prediction_log_pending_rows",
            "Prediction-log rows in memory, not yet in the database or the spool.",
            multiprocess_mode="livesum",
        ),
        batch_size=Histogram(
            "churn_adaptive_batch_size",
            "Customers per adaptive batch of /predict requests scored together.",
            buckets=BATCH_SIZE_BUCKETS,
        ),
        predictions=Counter(
            "churn_predictions",
            "Predictions served (cache hits included), by risk level.",
            ["risk_level"],
        ),
        latency=Histogram(
            "churn_prediction_latency_seconds",
            "Time from a scoring request's arrival to its answer, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
        ),
        probability=Histogram(
            "churn_prediction_probability",
            "Served churn probabilities (one observation per customer).",
            buckets=PROBABILITY_BUCKETS,
        ),
        # mostrecent: the folder is shared by the workers; whichever measured it last is right.
        spool_bytes=Gauge(
            "churn_prediction_log_spool_bytes",
            "Prediction-log rows on disk waiting for the database (spool files, bytes).",
            multiprocess_mode="mostrecent",
        ),
        errors=Counter(
            "churn_errors",
            "Refused or failed requests of the protected routes, by kind (HTTP status).",
            ["kind"],
        ),
    )
    # 0, not absent: rate() and alerts work from the first scrape.
    for outcome in get_args(LogRowOutcome):
        metrics.log_rows.labels(outcome=outcome)
    for level in RISK_LEVELS:
        metrics.predictions.labels(risk_level=level)
    for kind in get_args(ErrorKind):
        metrics.errors.labels(kind=kind)
    for endpoint in get_args(Endpoint):
        metrics.latency.labels(endpoint=endpoint)
    for reason in get_args(AuthFailure):
        metrics.auth_failures.labels(reason=reason)
    for result in get_args(CacheResult):
        metrics.cache_requests.labels(result=result)
    return metrics


def observe_answers(
    endpoint: Endpoint, seconds: float, probability: np.ndarray, risk_level: np.ndarray
) -> None:
    """Record one answered scoring request: its latency, and its customers' probabilities
    and risk levels, counted with numpy (a batch of 1,000 costs a dozen increments, not
    1,000 observations)."""
    metrics = _metrics()
    metrics.latency.labels(endpoint=endpoint).observe(seconds)
    observe_many(metrics.probability, probability)
    for level in RISK_LEVELS:
        count = int(np.count_nonzero(risk_level == level))
        if count:
            metrics.predictions.labels(risk_level=level).inc(count)


def observe_answer(endpoint: Endpoint, seconds: float, probability: float, risk_level: str) -> None:
    """Record one answered `/predict` (one customer) without building arrays."""
    metrics = _metrics()
    metrics.latency.labels(endpoint=endpoint).observe(seconds)
    metrics.probability.observe(probability)
    metrics.predictions.labels(risk_level=risk_level).inc()


def observe_many(histogram: Any, values: np.ndarray) -> None:
    """`histogram.observe(v)` for every value, by bucket rather than by value.

    prometheus_client has no bulk observe; this adds to the histogram's own bucket and sum
    values (its `_upper_bounds`, `_buckets`, `_sum`, the names `observe` uses; 0.26), so the
    exposition and multiprocess files are exactly what per-value calls would give
    (tests/code/test_metrics_bulk.py compares the two).
    """
    if len(values) == 0:
        return
    bounds = np.asarray(histogram._upper_bounds)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for index in np.flatnonzero(counts):
        histogram._buckets[index].inc(int(counts[index]))
    histogram._sum.inc(float(np.sum(values)))


def count_error(status: int) -> None:
    """Count one refused or failed request by the kind its status stands for."""
    _metrics().errors.labels(kind=ERROR_KINDS.get(status, "other")).inc()


@cache
def _redis_up() -> Any:
    """Created at the first Redis call, not with the others: a service without Redis must
    export no `churn_redis_up` at all (an unset gauge reads 0, and CacheDown would fire).
    livemin: one series, 0 as soon as any live worker finds Redis unreachable."""
    from prometheus_client import Gauge

    return Gauge(
        "churn_redis_up",
        "1 while Redis answers, 0 while this service's calls to it fail (absent: no Redis).",
        multiprocess_mode="livemin",
    )


def set_redis_up(up: bool) -> None:
    """Whether this worker's last Redis call succeeded."""
    _redis_up().set(1 if up else 0)


def count_cache(result: CacheResult) -> None:
    """Count one cache look-up."""
    _metrics().cache_requests.labels(result=result).inc()


def count_redis_error() -> None:
    """Count one failed Redis call."""
    _metrics().redis_errors.inc()


def count_rate_limited() -> None:
    """Count one request refused by the rate limiter."""
    _metrics().rate_limited.inc()


def count_auth_failure(reason: AuthFailure) -> None:
    """Count one request refused for a missing or wrong API key."""
    _metrics().auth_failures.labels(reason=reason).inc()


def count_auth_blocked() -> None:
    """Count one request refused for its address's failed authentications."""
    _metrics().auth_blocked.inc()


def count_log_rows(outcome: LogRowOutcome, rows: int = 1) -> None:
    """Count prediction-log rows by what happened to them."""
    if rows:
        _metrics().log_rows.labels(outcome=outcome).inc(rows)


def set_log_pending_rows(rows: int) -> None:
    """Rows of this worker not yet in the database."""
    _metrics().log_pending.set(rows)


def set_spool_bytes(size: int) -> None:
    """Bytes of prediction-log rows in the spool folder now."""
    _metrics().spool_bytes.set(size)


def observe_batch_size(customers: int) -> None:
    """Record the size of one adaptive batch."""
    _metrics().batch_size.observe(customers)
