"""Bulk observation of a histogram (serving/metrics.py `observe_many`): the same buckets,
count and sum as one `observe` per value, edges included."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest


def test_a_histogram_observed_in_bulk_equals_one_observed_value_by_value() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from serving.metrics import PROBABILITY_BUCKETS, observe_many

    values = np.random.default_rng(3).random(1000)
    values[:5] = [0.05, 0.1, 1.0, 0.0, 0.35]  # on bucket edges: `le` is inclusive
    bulk, single = CollectorRegistry(), CollectorRegistry()
    observed: dict[str, Any] = {}
    for registry, name in ((bulk, "bulk"), (single, "single")):
        observed[name] = Histogram("p", "p", buckets=PROBABILITY_BUCKETS, registry=registry)
    observe_many(observed["bulk"], values)
    for v in values:
        observed["single"].observe(float(v))
    as_dict = [
        {
            (s.name, s.labels.get("le")): s.value
            for m in r.collect()
            for s in m.samples
            if s.name != "p_created"
        }
        for r in (bulk, single)
    ]
    assert as_dict[0].keys() == as_dict[1].keys()
    for key, got in as_dict[0].items():
        assert got == pytest.approx(as_dict[1][key]), key
