"""`/metrics` of a real service with 2 workers: the design's metrics are exported, each
counter, histogram and gauge is one series however many workers there are and whichever
answers the scrape, and the monitoring jobs' stored results appear as gauges."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from launchers.redis_process import RedisServer
from launchers.server_process import ServerProcess, request_bodies
from monitoring.database import make_engine, upgrade_schema
from monitoring.triggers import record_trigger
from serving.model_metrics import PERFORMANCE_GAUGES
from tests.alerting.monitoring_files import PROMETHEUS_OWN, named_metrics, recorded
from tests.results_rows import insert_drift, insert_performance
from tests.serving.conftest import serve
from tests.serving.test_server import post_concurrently
from training.train import TrainingOutcome

pytestmark = pytest.mark.server

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
SCRAPES = 30


def scrape(url: str) -> Samples:
    """Every sample of one scrape by (name, labels); a repeated series fails here."""
    samples: Samples = {}
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"series exported twice: {key}"
            samples[key] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of `name` over the series whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


@pytest.fixture(scope="module")
def two_workers(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, trained: TrainingOutcome
) -> Iterator[tuple[ServerProcess, Engine]]:
    tmp = tmp_path_factory.mktemp("two-workers")
    url = f"sqlite:///{tmp / 'log.db'}"
    upgrade_schema(url)
    server = serve(
        tmp,
        url,
        redis_server.url,
        "two-workers",
        CHURN_WORKERS="2",
        CHURN_MONITORING_REFRESH_S="1",
        CHURN_API_KEYS="",
    )
    engine = make_engine(url)
    yield server, engine
    server.stop()
    engine.dispose()


def served_version(server: ServerProcess) -> str:
    version: str = httpx.get(f"{server.url}/health").json()["model_version"]
    return version


def worker_pids(server: ServerProcess) -> set[str]:
    """Pids that wrote Prometheus multiprocess files (one per worker that counted)."""
    folder = Path(server.log_path.with_name(f"{server.log_path.stem}-bentoml-home"))
    files = (folder / "prometheus_multiproc_dir").glob("counter_*.db")
    return {path.stem.removeprefix("counter_") for path in files}


def test_two_workers_export_one_consistent_series_per_metric(
    two_workers: tuple[ServerProcess, Engine], trained: TrainingOutcome
) -> None:
    server, engine = two_workers
    version = served_version(server)
    bodies = request_bodies(trained.test_frame.iloc[:256])
    answers = asyncio.run(post_concurrently(server.url, bodies))
    assert {a.status_code for a in answers} == {200}
    batch = httpx.post(f"{server.url}/predict/batch", json={"customers": bodies[:100]}, timeout=60)
    assert batch.status_code == 200
    invalid = [httpx.post(f"{server.url}/predict", json={"x": 1}) for _ in range(3)]
    assert {a.status_code for a in invalid} == {422}
    insert_drift(engine, version, {"tenure_months": 0.4, "monthly_charges": 0.02})
    insert_performance(engine, version, {"accuracy": 0.91, "roc_auc": 0.88})
    time.sleep(1.2)  # past CHURN_MONITORING_REFRESH_S

    served = [a.json() for a in answers] + batch.json()["predictions"]
    levels = {
        level: sum(p["risk_level"] == level for p in served) for level in ("low", "medium", "high")
    }
    scrapes = [scrape(server.url) for _ in range(SCRAPES)]
    assert len(worker_pids(server)) == 2, "both workers should have counted requests"
    for samples in scrapes:
        per_worker = {name for name, labels in samples if "pid" in dict(labels)}
        assert not per_worker, f"series per worker: {per_worker}"
        for level, count in levels.items():
            assert value(samples, "churn_predictions_total", risk_level=level) == count
        assert value(samples, "churn_prediction_probability_count") == len(served)
        assert value(samples, "churn_prediction_probability_sum") == pytest.approx(
            sum(p["churn_probability"] for p in served)
        )
        latency = value(samples, "churn_prediction_latency_seconds_count", endpoint="predict")
        assert latency == len(answers)
        assert value(samples, "churn_prediction_latency_seconds_count", endpoint="batch") == 1
        assert value(samples, "churn_errors_total", kind="validation") == 3
        assert value(samples, "churn_redis_up") == 1
        # livesum: the two live workers, one series.
        assert value(samples, "churn_workers_ready") == 2
        assert value(samples, "churn_worker_resident_memory_bytes") > 2 * 100e6
        psi = value(
            samples,
            "churn_feature_psi",
            model_version=version,
            kind="feature",
            feature="tenure_months",
        )
        assert psi == pytest.approx(0.4)
        assert value(samples, "churn_drift_status", model_version=version) == 2
        accuracy = value(samples, "churn_model_accuracy", model_version=version, source="measured")
        assert accuracy == pytest.approx(0.91)
        assert value(
            samples, "churn_model_accuracy", model_version=version, source="estimated"
        ) == pytest.approx(0.92)
        assert value(samples, "churn_label_coverage", model_version=version) == 0.5
    # Scrapes are answered by both workers in turn: the same counters every time.
    first = {k: v for k, v in scrapes[0].items() if k[0].startswith("churn_predictions")}
    assert all({k: s[k] for k in first} == first for s in scrapes)


def test_a_new_result_replaces_the_old_one_for_good_whichever_worker_answers(
    two_workers: tuple[ServerProcess, Engine], trained: TrainingOutcome
) -> None:
    """`mostrecent`: once a worker has read the newer run, no scrape shows the older one
    again (each worker's stale copy is older, so it never wins)."""
    server, engine = two_workers
    version = served_version(server)
    insert_drift(engine, version, {"tenure_months": 0.05, "monthly_charges": 0.01})
    time.sleep(1.2)
    seen = []
    for _ in range(SCRAPES):
        samples = scrape(server.url)
        seen.append(
            value(
                samples,
                "churn_feature_psi",
                model_version=version,
                kind="feature",
                feature="tenure_months",
            )
        )
        time.sleep(0.05)
    assert seen[0] == pytest.approx(0.05)
    np.testing.assert_allclose(seen, 0.05)
    assert value(samples, "churn_drift_status", model_version=version) == 0


def scraped_names(samples: Samples) -> set[str]:
    """Metric names as PromQL sees them (`_bucket`, `_count`, `_total` included)."""
    return {name for name, _ in samples}


def test_every_metric_a_rule_or_dashboard_reads_is_exported(
    two_workers: tuple[ServerProcess, Engine], trained: TrainingOutcome
) -> None:
    """A typo in a rule or a panel (or a metric renamed here) would make an alert that can
    never fire: every name is scraped from the running service, or recorded by a rule."""
    server, engine = two_workers
    version = served_version(server)
    insert_drift(engine, version, {"tenure_months": 0.3})
    insert_performance(engine, version, dict.fromkeys(PERFORMANCE_GAUGES, 0.9))
    record_trigger(engine, "drift", version, ["tenure_months"], {"psi": 0.3})
    time.sleep(1.2)
    httpx.post(f"{server.url}/predict", json=request_bodies(trained.test_frame.iloc[:1])[0])
    exported = scraped_names(scrape(server.url))
    missing = named_metrics() - exported - recorded() - PROMETHEUS_OWN
    assert not missing, f"named in rules or dashboards, not exported: {sorted(missing)}"
