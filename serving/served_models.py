"""What one worker serves: the champion, and while an experiment runs the challenger.

The set is one immutable `ServedModels`, swapped as a single reference when the registry's
assignment changes (serving/model_watcher.py), so a batch is scored by one consistent set
whatever happens meanwhile.

A customer's arm is **sticky**: the challenger answers a customer when a keyed hash of the
customer's id (the log's HMAC `customer_hash`, salted with the challenger's version) falls
below its share. Every replica computes the same arm (the HMAC key is shared, as the log
join needs), a customer keeps their arm for the whole experiment, and a new challenger
draws a fresh sample of customers. While an experiment runs both models score every
customer: the other model's probability is logged with the answer (the shadow), so the
promotion test compares the two on the same customers.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from core.schema import CustomerData
from core.settings import Settings
from serving.model_events import count_answers, count_scoring_errors
from serving.scoring import LoadedModel, ScoredBatch, score_batch

logger = logging.getLogger("churn.models")

_BUCKETS = float(1 << 32)


@dataclass(frozen=True)
class ServedModels:
    """The models one worker answers with; `fallback` is the champion before the last
    swap, kept loaded: it answers when the champion's scoring fails."""

    champion: LoadedModel
    challenger: LoadedModel | None = None
    share: float = 0.0
    fallback: LoadedModel | None = None
    champion_registered: str | None = None
    """The champion's registry version (None: served from the store, no registry)."""
    challenger_registered: str | None = None

    @cached_property
    def cache_scope(self) -> str:
        """What a cached answer is valid for: the champion alone, or the whole experiment
        (which model answers a customer, and the shadow logged, depend on all three)."""
        if self.challenger is None:
            return self.champion.cache_scope
        return f"{self.champion.cache_scope}|{self.challenger.cache_scope}|{self.share!r}"

    def describe(self) -> str:
        """One line for the server log."""
        text = f"champion {self.champion.version}"
        if self.champion_registered:
            text += f" (registry version {self.champion_registered})"
        if self.challenger is not None:
            text += f", challenger {self.challenger.version}"
            if self.challenger_registered:
                text += f" (registry version {self.challenger_registered})"
            text += f" for {self.share:.0%} of customers"
        return text


def challenger_arm(customer_hashes: Sequence[str], share: float, salt: str) -> np.ndarray:
    """True for the customers the challenger answers: sticky per (customer, challenger)."""
    buckets = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(f"{salt}:{h}".encode(), digest_size=4).digest())
            for h in customer_hashes
        ),
        dtype=np.float64,
        count=len(customer_hashes),
    )
    return buckets < share * _BUCKETS


class ErrorWindow:
    """A model's last `size` answers in this worker, failed or not: its error rate."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._outcomes: dict[str, deque[bool]] = {}
        self._lock = threading.Lock()

    def record(self, version: str, customers: int, failed: bool) -> None:
        with self._lock:
            window = self._outcomes.setdefault(version, deque(maxlen=self.size))
            window.extend([failed] * min(customers, self.size))

    def rate(self, version: str) -> tuple[float, int]:
        """(share failed, answers judged) over the last `size` answers of `version`."""
        with self._lock:
            window = self._outcomes.get(version, ())
            return (sum(window) / len(window) if window else 0.0), len(window)

    def forget(self, version: str) -> None:
        with self._lock:
            self._outcomes.pop(version, None)


def score_served(
    served: ServedModels,
    customers: Sequence[CustomerData],
    settings: Settings,
    hash_id: Callable[[str], str],
    errors: ErrorWindow,
    started: float | None = None,
) -> ScoredBatch:
    """Score a batch with the served set: the champion (its fallback if its scoring
    fails), and during an experiment the challenger too, each customer answered by its arm
    and the other model's probability kept as the shadow."""
    champion = _score_champion(served, customers, settings, errors, started)
    if served.challenger is None:
        count_answers(champion.model_version, "champion", len(customers))
        return champion
    try:
        challenger = score_batch(served.challenger, customers, settings, started)
    except Exception:
        logger.exception("challenger %s failed to score a batch", served.challenger.version)
        count_scoring_errors(served.challenger.version, len(customers))
        errors.record(served.challenger.version, len(customers), failed=True)
        count_answers(champion.model_version, "champion", len(customers))
        return champion
    errors.record(served.challenger.version, len(customers), failed=False)
    arm = challenger_arm(
        [hash_id(c.customer_id) for c in customers], served.share, challenger.model_version
    )
    merged = _merge(champion, challenger, arm)
    answered_by_challenger = int(np.count_nonzero(arm))
    count_answers(challenger.model_version, "challenger", answered_by_challenger)
    count_answers(champion.model_version, "champion", len(customers) - answered_by_challenger)
    return merged


def _score_champion(
    served: ServedModels,
    customers: Sequence[CustomerData],
    settings: Settings,
    errors: ErrorWindow,
    started: float | None,
) -> ScoredBatch:
    try:
        scored = score_batch(served.champion, customers, settings, started)
    except Exception:
        count_scoring_errors(served.champion.version, len(customers))
        errors.record(served.champion.version, len(customers), failed=True)
        if served.fallback is None:
            raise
        logger.exception(
            "champion %s failed to score a batch; the fallback %s answers it",
            served.champion.version,
            served.fallback.version,
        )
        return score_batch(served.fallback, customers, settings, started)
    errors.record(served.champion.version, len(customers), failed=False)
    return scored


def _merge(champion: ScoredBatch, challenger: ScoredBatch, arm: np.ndarray) -> ScoredBatch:
    """Each customer's answer from its arm's model, the other model's probability as shadow."""
    if champion.reason_features.shape != challenger.reason_features.shape:
        # Fewer features than reasons asked for in one model: lay the reasons out row by row.
        features = np.empty(len(arm), dtype=object)
        contributions = np.empty(len(arm), dtype=object)
        for i, by_challenger in enumerate(arm.tolist()):
            source = challenger if by_challenger else champion
            features[i], contributions[i] = (
                source.reason_features[i],
                source.reason_contributions[i],
            )
        reason_features, reason_contributions = features, contributions
    else:
        column = arm[:, None]
        reason_features = np.where(column, challenger.reason_features, champion.reason_features)
        reason_contributions = np.where(
            column, challenger.reason_contributions, champion.reason_contributions
        )
    return ScoredBatch(
        customer_ids=champion.customer_ids,
        probability=np.where(arm, challenger.probability, champion.probability),
        will_churn=np.where(arm, challenger.will_churn, champion.will_churn),
        risk_level=np.where(arm, challenger.risk_level, champion.risk_level),
        recommendation=np.where(arm, challenger.recommendation, champion.recommendation),
        reason_features=reason_features,
        reason_contributions=reason_contributions,
        model_version=champion.model_version,
        timestamp=challenger.timestamp,
        latency_ms=challenger.latency_ms,
        challenger=arm,
        challenger_version=challenger.model_version,
        shadow_probability=np.where(arm, champion.probability, challenger.probability),
    )
