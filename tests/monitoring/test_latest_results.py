"""What `/metrics` exports of the monitoring jobs: the newest run of the served version only."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from monitoring.latest_results import read_latest_results
from monitoring.triggers import consume_triggers, record_trigger
from tests.results_rows import insert_drift, insert_performance

EARLIER = datetime.now(UTC) - timedelta(days=1)


def test_only_the_newest_run_of_the_served_version_is_read(engine: Engine) -> None:
    insert_drift(engine, "v1", {"tenure_months": 0.4, "monthly_charges": 0.3}, at=EARLIER)
    insert_drift(engine, "v1", {"tenure_months": 0.05})
    insert_drift(engine, "v0", {"tenure_months": 0.9})
    insert_performance(engine, "v1", {"accuracy": 0.7}, at=EARLIER)
    insert_performance(engine, "v1", {"accuracy": 0.9, "recall": None}, labels=250)

    results = read_latest_results(engine, "v1")

    assert [(d.column, d.psi) for d in results.drift] == [("tenure_months", 0.05)]
    assert results.drift_status() == {"v1": 0}
    figures = {p.metric: p for p in results.performance}
    assert figures.keys() == {"accuracy", "recall"}
    assert math.isclose(figures["accuracy"].measured or 0, 0.9)
    assert figures["recall"].measured is None
    assert results.label_coverage() == {"v1": 0.25}
    assert results.last_run.keys() == {"drift", "performance"}
    assert results.last_run["drift"] > EARLIER


def test_no_run_yet_reads_as_empty(engine: Engine) -> None:
    results = read_latest_results(engine, "v1")
    assert results.drift == [] and results.performance == [] and results.last_run == {}
    assert results.drift_status() == {}


def test_triggers_are_counted_by_reason_and_state(engine: Engine) -> None:
    first = record_trigger(engine, "drift", "v1", ["tenure_months"], {"psi": 0.4})
    record_trigger(engine, "drift", "v1", ["tenure_months"], {"psi": 0.5})
    record_trigger(engine, "performance", "v2", [], {"accuracy": 0.8})
    consume_triggers(engine, [first])
    assert read_latest_results(engine, "v1").triggers == {
        ("drift", "pending"): 1,
        ("drift", "consumed"): 1,
    }
