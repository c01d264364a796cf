"""The checks a model passes before it takes traffic in a running worker.

A model the registry assigns is fetched (its files verified against their checksums and
the checksum recorded at registration: core/registry_files.py), loaded, and then checked
here: its feature contract, its golden predictions and its latency. The first failed check
refuses it, named by `check`, and the worker keeps serving what it serves.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from core.pipeline.encode import encode_frame
from core.pipeline.golden import golden_problem
from core.pipeline.predictor import ChurnPredictor
from core.pipeline.store import StoredPredictor, load_reference
from core.settings import Settings

LATENCY_CALLS = 21


@dataclass(frozen=True)
class Refusal:
    """Why a model may not serve: the check that failed, and how."""

    check: str
    """'checksum', 'contract', 'golden', 'latency' or 'load'."""
    reason: str


def contract_problem(candidate: ChurnPredictor, serving: ChurnPredictor | None) -> str | None:
    """Why `candidate` cannot answer the requests `serving` answers now, or is not
    consistent in itself (booster and feature transformer disagree); None: it can."""
    names = list(candidate.feature_names)
    booster_names = candidate.booster.feature_names
    if booster_names is not None and list(booster_names) != names:
        return (
            f"the booster's {len(booster_names)} features are not the feature transformer's "
            f"{len(names)} ({sorted(set(booster_names) ^ set(names))[:5]} differ)"
        )
    if candidate.booster.num_features() != len(names):
        return f"the booster takes {candidate.booster.num_features()} features, not {len(names)}"
    if serving is not None:
        theirs = [c.name for c in serving.extras]
        ours = [c.name for c in candidate.extras]
        if ours != theirs:
            return (
                f"its extra columns {ours} are not the served model's {theirs}: requests "
                "validated for one would be refused or misread by the other"
            )
    return None


def one_customer_ms(predictor: ChurnPredictor, folder: Path, top_reasons: int) -> float | None:
    """Median time of scoring one reference customer, in ms (None: no reference inputs)."""
    inputs = load_reference(folder).inputs
    if inputs is None or inputs.empty:
        return None
    raw = encode_frame(inputs.head(1), predictor.extras)
    timings = []
    for _ in range(LATENCY_CALLS):
        start = time.perf_counter()
        predictor.probability_and_reasons(predictor.transform(raw), top_reasons)
        timings.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(timings)


def refusal(
    candidate: StoredPredictor, serving: ChurnPredictor | None, settings: Settings
) -> Refusal | None:
    """The first check `candidate` fails, or None when it may serve."""
    if problem := contract_problem(candidate.predictor, serving):
        return Refusal("contract", problem)
    inputs = load_reference(candidate.path).inputs
    if problem := golden_problem(candidate.path, candidate.predictor, inputs):
        return Refusal("golden", problem)
    candidate.predictor.warm_up()
    took = one_customer_ms(candidate.predictor, candidate.path, settings.top_reasons)
    if took is not None and took > settings.swap_max_latency_ms:
        return Refusal(
            "latency",
            f"one customer takes {took:.1f} ms (median of {LATENCY_CALLS}), over "
            f"CHURN_SWAP_MAX_LATENCY_MS = {settings.swap_max_latency_ms:g}",
        )
    return None
