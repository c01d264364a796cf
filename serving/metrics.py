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

CacheResult = Literal["hit", "miss", "error", "off"]
AuthFailure = Literal["missing", "wrong"]
LogRowOutcome = Literal["written", "spooled", "replayed", "lost"]


BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


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
            "Prediction-log rows not yet in the database (memory and spool).",
            multiprocess_mode="livesum",
        ),
        batch_size=Histogram(
            "churn_adaptive_batch_size",
            "Customers per adaptive batch of /predict requests scored together.",
            buckets=BATCH_SIZE_BUCKETS,
        ),
    )
    for outcome in get_args(LogRowOutcome):  # 0, not absent: an alert on "lost" can fire
        metrics.log_rows.labels(outcome=outcome)
    return metrics


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


def observe_batch_size(customers: int) -> None:
    """Record the size of one adaptive batch."""
    _metrics().batch_size.observe(customers)
