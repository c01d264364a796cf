"""A champion/challenger experiment written the way the product writes it: two registered
versions in a real MLflow SQLite registry, prediction rows with their arm and the other
model's score through `insert_rows`, labels through `store_labels`.

Scores are realistic: each customer's label is drawn from the generator's true churn
probability; a good model scores the true log-odds plus a little noise, a bad one plus a lot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
from bentoml._internal.models import ModelStore
from sqlalchemy import Engine

from core.registry import ModelRegistry
from monitoring.feedback import Label, store_labels
from monitoring.identity import customer_hash
from monitoring.records import PredictionRecord, insert_rows, record_row
from tests.core.test_registry import copy_model
from training.generate import generate_customers
from training.train import TrainingOutcome

SECRET = b"experiment-secret-0123456789abcdef0123"
GOOD_NOISE, BAD_NOISE = 0.1, 1.5
"""Standard deviations of the noise on the true log-odds: AUC ≈ 0.83 against ≈ 0.75."""


@dataclass(frozen=True)
class Versions:
    """Two registered versions: registered number and the BentoML version the log writes."""

    champion: str
    challenger: str
    champion_bento: str
    challenger_bento: str


def register_pair(
    registry: ModelRegistry, trained: TrainingOutcome, source: ModelStore
) -> Versions:
    """The session model as champion, a copy of it with another decision threshold (saved
    under a new version in `source`, with its own checksums) as challenger."""
    assert trained.tag is not None
    champion = registry.register(trained.tag, "trainer", "day 0")
    tag = copy_model(trained, source, threshold=0.3)
    challenger = registry.register(tag, "trainer", "retrained", store=source)
    registry.set_champion(champion, "test", "first model")
    registry.set_challenger(challenger, "test", "retrained model", share=0.5)
    return Versions(champion, challenger, trained.tag.split(":")[1], tag.split(":")[1])


def scores(log_odds: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(log_odds + rng.normal(0.0, noise, log_odds.size))))


@dataclass(frozen=True)
class Cohort:
    """Customers served at one time, with what each model scored and what happened."""

    ids: list[str]
    churned: np.ndarray
    p_champion: np.ndarray
    p_challenger: np.ndarray


def cohort(
    rows: int,
    seed: int,
    champion_noise: float,
    challenger_noise: float,
    prefix: str = "C",
) -> Cohort:
    frame = generate_customers(rows, seed)
    p = frame["true_churn_probability"].to_numpy()
    rng = np.random.default_rng(seed)
    log_odds = np.log(p / (1 - p))
    return Cohort(
        [f"{prefix}{seed}-{i:05d}" for i in range(rows)],
        frame["churned"].to_numpy().astype(bool),
        scores(log_odds, champion_noise, rng),
        scores(log_odds, challenger_noise, rng),
    )


def log_cohort(
    engine: Engine,
    versions: Versions,
    group: Cohort,
    served_at: datetime,
    *,
    churn_after_days: int = 20,
    stay_label_after_days: int | None = 80,
    thresholds: tuple[float, float] = (0.5, 0.3),
) -> None:
    """Log the cohort's predictions (every other customer answered by the challenger, the
    other model's score beside it) and its labels: a churn `churn_after_days` after the
    prediction, a "still here" label `stay_label_after_days` after it (None: none yet)."""
    records = []
    for i, customer in enumerate(group.ids):
        challenger_arm = i % 2 == 1
        answer, shadow = (
            (group.p_challenger[i], group.p_champion[i])
            if challenger_arm
            else (group.p_champion[i], group.p_challenger[i])
        )
        records.append(
            record_row(
                PredictionRecord(
                    request_id=f"req-{customer}",
                    customer_hash=customer_hash(customer, SECRET),
                    model_version=(
                        versions.challenger_bento if challenger_arm else versions.champion_bento
                    ),
                    features={},
                    churn_probability=float(answer),
                    will_churn=bool(answer >= thresholds[int(challenger_arm)]),
                    risk_level="high" if answer >= 0.5 else "low",
                    latency_ms=1.0,
                    cache="none",
                    endpoint="predict",
                    created_at=served_at,
                    model_arm="challenger" if challenger_arm else "champion",
                    shadow_version=(
                        versions.champion_bento if challenger_arm else versions.challenger_bento
                    ),
                    shadow_probability=float(shadow),
                )
            )
        )
    with engine.begin() as connection:
        for start in range(0, len(records), 1000):
            insert_rows(connection, records[start : start + 1000])
    labels = []
    for customer, churned in zip(group.ids, group.churned, strict=True):
        after = churn_after_days if churned else stay_label_after_days
        if after is not None:
            observed: date = (served_at + timedelta(days=after)).date()
            labels.append(
                Label(customer_id=customer, churned=bool(churned), observed_date=observed)
            )
    store_labels(engine, labels, SECRET)
