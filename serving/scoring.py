"""Scoring a batch of validated requests: the plain-Python core of the service.

Knows nothing about HTTP or BentoML: it turns customers into a `ScoredBatch` (columns,
and one `Prediction`-shaped dict per customer) with one vectorised pass through the
predictor, and can be tested and benchmarked alone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from core.pipeline.encode import encode_customers
from core.pipeline.extras import extra_problems
from core.pipeline.predictor import ChurnPredictor
from core.risk import RISK_LEVELS, risk_levels, will_churn
from core.schema import MODEL_ARMS, CustomerData, Prediction
from core.settings import Settings

SHADOW_KEY = "_shadow"
"""A scored row's extra key for the log: the other model's `[version, probability]`."""

RECOMMENDATIONS = {
    "low": "No action needed; keep the regular engagement programme.",
    "medium": "Send a proactive engagement offer and monitor usage.",
    "high": "Contact within 48 hours with a retention offer.",
}
"""Base recommendation per risk level."""

ACTION_HINTS = {
    "contract_type_risk": "Offer a discounted one- or two-year contract.",
    "contract_length_months": "Offer a discounted one- or two-year contract.",
    "payment_method_risk_score": "Encourage a switch to automatic payment.",
    "has_autopay": "Encourage a switch to automatic payment.",
    "support_calls_per_month": "Escalate and resolve open support issues.",
    "support_calls": "Escalate and resolve open support issues.",
    "internet_service_type_encoded": "Check the quality of the customer's internet service.",
    "late_payment_count": "Offer a payment plan.",
    "billing_issues_count": "Review the customer's recent bills for errors.",
    "monthly_charges": "Review pricing: a cheaper plan may retain the customer.",
    "price_per_service": "Review pricing: a cheaper plan may retain the customer.",
    "tech_support": "Offer a free tech-support add-on.",
    "online_security": "Offer a free online-security add-on.",
    "has_premium_services": "Offer a premium-service trial.",
    "is_new_customer": "Enrol the customer in the onboarding programme.",
}
"""Extra advice when the strongest churn-raising reason is one we can act on."""


@dataclass(frozen=True)
class LoadedModel:
    """The predictor the service scores with, the version it reports, and the content
    checksum of its stored files (core/pipeline/integrity.py), which keys the cache."""

    predictor: ChurnPredictor
    version: str
    checksum: str

    @cached_property
    def cache_scope(self) -> str:
        """``{version}:{first 128 bits of the checksum}``: what a cached answer is valid for."""
        return f"{self.version}:{self.checksum[:32]}"


def recommendation(level: str, top_feature: str | None) -> str:
    """The base advice for the band, plus a concrete action for the top reason."""
    base = RECOMMENDATIONS[level]
    hint = ACTION_HINTS.get(top_feature or "")
    return f"{base} {hint}" if hint and level != "low" else base


def extra_field_problems(
    model: LoadedModel, customers: Sequence[CustomerData]
) -> dict[int, list[dict[str, str]]]:
    """Customers whose ``extra`` object does not fit the model: position → problems."""
    columns = model.predictor.extras
    found = {}
    for i, customer in enumerate(customers):
        if customer.extra or columns:
            problems = extra_problems(customer.extra, columns)
            if problems:
                found[i] = problems
    return found


def recommendation_table(feature_names: Sequence[str]) -> np.ndarray:
    """Every possible recommendation as an array indexed by [risk level, top raising
    feature + 1] (column 0: no feature raised the risk), so a batch looks them all up at once."""
    table = np.empty((len(RISK_LEVELS), len(feature_names) + 1), dtype=object)
    for level_index, level in enumerate(RISK_LEVELS):
        table[level_index, 0] = recommendation(level, None)
        for j, name in enumerate(feature_names):
            table[level_index, j + 1] = recommendation(level, name)
    return table


@lru_cache(maxsize=8)
def _lookup_tables(feature_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(feature names as an object array, recommendation table), built once per model."""
    return np.array(feature_names, dtype=object), recommendation_table(feature_names)


ANSWER_FIELDS: tuple[str, ...] = tuple(Prediction.model_fields)
"""The keys of an answer row, in `Prediction`'s order (which is the JSON's)."""
_TIMESTAMP = TypeAdapter(datetime)
"""`Prediction.timestamp`'s type, to have pydantic write it."""


def answer_timestamp(moment: datetime) -> str:
    """`Prediction.timestamp` as pydantic writes it (RFC 3339, UTC with a `Z`), by pydantic
    itself: once per batch, so the rows can carry it as text."""
    text: str = _TIMESTAMP.dump_python(moment.astimezone(UTC), mode="json")
    return text


def answer_rows(
    per_customer: Mapping[str, Sequence[Any]], shared: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """`Prediction`-shaped dicts: `per_customer` holds an equal-length column per field
    that varies by customer, `shared` the value of each field all rows have in common;
    together exactly `Prediction`'s fields, laid out in its field order (the JSON's).

    Each row is a copy of one template dict, filled a column at a time: as fast as a dict
    literal, without spelling the fields out again. No per-row validation: the columns
    were computed for the schema, and validating would add about 3 ms per 1,000 rows
    (40 % of scoring them); a test checks that pydantic writes the same rows.
    """
    named = [*per_customer, *shared]
    if len(named) != len(ANSWER_FIELDS) or set(named) != set(ANSWER_FIELDS):
        raise ValueError(f"answer columns {sorted(named)} are not Prediction's fields")
    lengths = {len(column) for column in per_customer.values()}
    if len(lengths) != 1:
        raise ValueError(f"answer columns of different lengths: {sorted(lengths)}")
    template = dict.fromkeys(ANSWER_FIELDS)
    template.update(shared)
    rows = [template.copy() for _ in range(lengths.pop())]
    for name, column in per_customer.items():
        for row, value in zip(rows, column, strict=True):
            row[name] = value
    return rows


@dataclass(frozen=True)
class ScoredBatch:
    """A scored batch as columns; `rows()` turns it into the JSON-ready answers."""

    customer_ids: list[str]
    probability: np.ndarray
    will_churn: np.ndarray
    risk_level: np.ndarray  # object array of RISK_LEVELS
    recommendation: np.ndarray  # object array
    reason_features: np.ndarray  # (n, k) object array of feature names
    reason_contributions: np.ndarray  # (n, k) float
    model_version: str
    timestamp: str
    latency_ms: float
    challenger: np.ndarray | None = None
    """Per customer, True where the challenger answered (None: no experiment)."""
    challenger_version: str | None = None
    shadow_probability: np.ndarray | None = None
    """Per customer, the other model's probability (None: no experiment)."""

    def rows(self, with_shadow: bool = False) -> list[dict[str, Any]]:
        """One `Prediction`-shaped dict per customer. Every value is computed above in
        vectorised form; this only lays the columns out as JSON objects. `with_shadow`
        adds the other model's `[version, probability]` under `SHADOW_KEY`, for the log
        (the request path takes it out before answering)."""
        reasons = [
            [{"feature": f, "contribution": c} for f, c in zip(fs, cs, strict=True)]
            for fs, cs in zip(
                self.reason_features.tolist(), self.reason_contributions.tolist(), strict=True
            )
        ]
        per_customer = {
            "customer_id": self.customer_ids,
            "churn_probability": self.probability.tolist(),
            "will_churn": self.will_churn.tolist(),
            "risk_level": self.risk_level.tolist(),
            "recommendation": self.recommendation.tolist(),
            "top_reasons": reasons,
        }
        shared: dict[str, Any] = {"timestamp": self.timestamp, "latency_ms": self.latency_ms}
        if self.challenger is None:
            shared |= {"model_version": self.model_version, "model_arm": MODEL_ARMS[0]}
        else:
            per_customer["model_version"] = self.versions().tolist()
            per_customer["model_arm"] = np.array(MODEL_ARMS, dtype=object)[
                self.challenger.astype(np.intp)
            ].tolist()
        rows = answer_rows(per_customer, shared)
        if with_shadow:
            for row, shadow in zip(rows, self.shadows(), strict=True):
                if shadow is not None:
                    row[SHADOW_KEY] = shadow
        return rows

    def versions(self) -> np.ndarray:
        """Per customer, the version of the model that answered."""
        if self.challenger is None:
            return np.full(len(self.customer_ids), self.model_version, dtype=object)
        return np.where(self.challenger, str(self.challenger_version), self.model_version)

    def shadows(self) -> list[list[Any] | None]:
        """Per customer, the other model's `[version, probability]` (None: no experiment)."""
        if self.challenger is None or self.shadow_probability is None:
            return [None] * len(self.customer_ids)
        other = np.where(self.challenger, self.model_version, str(self.challenger_version))
        return [
            [version, probability]
            for version, probability in zip(
                other.tolist(), self.shadow_probability.tolist(), strict=True
            )
        ]

    @property
    def high_risk_count(self) -> int:
        return int(np.count_nonzero(self.risk_level == "high"))


def _first_raising_feature(feature_index: np.ndarray, contribution: np.ndarray) -> np.ndarray:
    """Per row, the first reason that raised the risk (contribution > 0), or -1."""
    raising = contribution > 0
    if raising.shape[1] == 0:
        return np.full(len(raising), -1)
    first = np.argmax(raising, axis=1)
    found = feature_index[np.arange(len(raising)), first]
    return np.where(raising.any(axis=1), found, -1)


def score_batch(
    model: LoadedModel,
    customers: Sequence[CustomerData],
    settings: Settings,
    started: float | None = None,
) -> ScoredBatch:
    """Score a batch in one vectorised pass: probabilities, risk levels, reasons and
    recommendations for every customer at once."""
    started = time.perf_counter() if started is None else started
    predictor = model.predictor
    features = predictor.transform(encode_customers(customers, predictor.extras))
    probability, explanation = predictor.probability_and_reasons(features, settings.top_reasons)
    names, advice = _lookup_tables(tuple(predictor.feature_names))
    levels = risk_levels(probability, settings, predictor.threshold)
    top_raising = _first_raising_feature(explanation.feature_index, explanation.contribution)
    return ScoredBatch(
        customer_ids=[customer.customer_id for customer in customers],
        probability=probability,
        will_churn=will_churn(probability, predictor.threshold),
        risk_level=np.array(RISK_LEVELS, dtype=object)[levels],
        recommendation=advice[levels, top_raising + 1],
        reason_features=names[explanation.feature_index],
        reason_contributions=explanation.contribution,
        model_version=model.version,
        timestamp=answer_timestamp(datetime.now(UTC)),
        latency_ms=(time.perf_counter() - started) * 1000.0,
    )
