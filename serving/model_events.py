"""Prometheus metrics of what a worker serves: answers per model version and arm, scoring
failures, model swaps and refused models. Created on first use, like serving/metrics.py
(BentoML sets the multiprocess directory after this module is imported)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

SwapRole = Literal["champion", "challenger"]


@dataclass(frozen=True)
class _Metrics:
    answers: Any
    scoring_errors: Any
    swaps: Any
    refusals: Any


@cache
def _metrics() -> _Metrics:
    from prometheus_client import Counter

    return _Metrics(
        answers=Counter(
            "churn_model_answers",
            "Customers answered, by the model version and experiment arm that answered.",
            ["model_version", "arm"],
        ),
        scoring_errors=Counter(
            "churn_model_scoring_errors",
            "Customers whose scoring failed in a model version (answered by the fallback "
            "model when one is loaded; the error-rate rollback counts these).",
            ["model_version"],
        ),
        swaps=Counter(
            "churn_model_swaps",
            "Models this worker started serving without a restart, by role.",
            ["role"],
        ),
        refusals=Counter(
            "churn_model_refusals",
            "Models the registry assigned that this worker refused, by the failed check "
            "(checksum, contract, golden, latency, load); the current model kept serving.",
            ["check"],
        ),
    )


def count_answers(version: str, arm: str, customers: int) -> None:
    _metrics().answers.labels(model_version=version, arm=arm).inc(customers)


def count_scoring_errors(version: str, customers: int) -> None:
    _metrics().scoring_errors.labels(model_version=version).inc(customers)


def count_swap(role: SwapRole) -> None:
    _metrics().swaps.labels(role=role).inc()


def count_refusal(check: str) -> None:
    _metrics().refusals.labels(check=check).inc()
