"""Scoring a batch of validated requests: the plain-Python core of the service.

Knows nothing about HTTP or BentoML: it turns customers into `Prediction` objects with
one vectorised pass through the predictor, and can be tested and benchmarked alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from training.config import Settings
from training.encode import encode_customers
from training.extras import extra_problems
from training.predict import ChurnPredictor
from training.schema import CustomerData, Prediction, Reason

RISK_LEVELS = ("low", "medium", "high")

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
    """The predictor the service scores with, and the version it reports."""

    predictor: ChurnPredictor
    version: str


def risk_levels(probability: np.ndarray, settings: Settings) -> np.ndarray:
    """Index into `RISK_LEVELS` for each probability, by the configured bands."""
    bands = np.array([settings.risk_medium_from, settings.risk_high_from])
    return np.searchsorted(bands, probability, side="right")


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


def score_customers(
    model: LoadedModel,
    customers: Sequence[CustomerData],
    settings: Settings,
    started: float | None = None,
) -> list[Prediction]:
    """Score a batch in one pass and build one `Prediction` per customer."""
    started = time.perf_counter() if started is None else started
    predictor = model.predictor
    features = predictor.transform(encode_customers(customers, predictor.extras))
    probability = predictor.calibration(predictor.raw_probability(features))
    levels = risk_levels(probability, settings)
    will_churn = probability >= predictor.threshold
    names = predictor.feature_names
    explanation = predictor.explain(features, settings.top_reasons)
    now = datetime.now(UTC)
    latency_ms = (time.perf_counter() - started) * 1000.0

    predictions = []
    for i, customer in enumerate(customers):
        reasons = [
            Reason.model_construct(feature=names[j], contribution=float(c))
            for j, c in zip(explanation.feature_index[i], explanation.contribution[i], strict=True)
        ]
        top_raising = next((r.feature for r in reasons if r.contribution > 0), None)
        level = RISK_LEVELS[levels[i]]
        predictions.append(
            Prediction.model_construct(
                customer_id=customer.customer_id,
                churn_probability=float(probability[i]),
                will_churn=bool(will_churn[i]),
                risk_level=level,
                recommendation=recommendation(level, top_raising),
                top_reasons=reasons,
                model_version=model.version,
                timestamp=now,
                latency_ms=latency_ms,
            )
        )
    return predictions
