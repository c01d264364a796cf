"""The alerting path end to end, with real binaries: the service exports a stored drift
(or performance) result, a real Prometheus scrapes it and evaluates the project's rules,
a real Alertmanager routes the alert and delivers it to a webhook in this test, once,
however many times Prometheus re-sends it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine

from launchers.prometheus_process import PrometheusServer
from launchers.server_process import ServerProcess
from monitoring.database import make_engine, upgrade_schema
from tests.alerting.webhook import (
    Webhook,
    alerting_path,
    assert_delivered_once,
    served_version,
)
from tests.results_rows import insert_drift, insert_performance
from tests.serving.conftest import serve
from training.train import TrainingOutcome

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, trained: TrainingOutcome
) -> Iterator[tuple[ServerProcess, Engine, PrometheusServer, Webhook]]:
    """Service (SQLite log) → Prometheus (1 s scrapes and evaluations, rules' `for` 2 s) →
    Alertmanager (the project's routing, webhook receivers) → this test's webhook."""
    tmp = tmp_path_factory.mktemp("alerting")
    url = f"sqlite:///{tmp / 'log.db'}"
    upgrade_schema(url)
    service = serve(tmp, url, None, "alerting", CHURN_MONITORING_REFRESH_S="1")
    engine = make_engine(url)
    with alerting_path(service, tmp) as (prometheus, webhook):
        yield service, engine, prometheus, webhook
    service.stop()
    engine.dispose()


def test_a_significant_drift_result_is_delivered_once_as_model_drift(
    stack: tuple[ServerProcess, Engine, PrometheusServer, Webhook],
) -> None:
    service, engine, prometheus, webhook = stack
    version = served_version(service)
    time.sleep(3)  # a few evaluations with nothing to alert on
    assert [a for a in prometheus.alerts() if a["state"] == "firing"] == []
    psi = {"tenure_months": 0.42, "is_new_customer": 0.31, "monthly_charges": 0.03}
    insert_drift(engine, version, psi)

    assert_delivered_once(webhook, "ModelDrift", "ml-team-slack", version)
    firing = [a for a in prometheus.alerts() if a["state"] == "firing"]
    assert [a["labels"]["alertname"] for a in firing] == ["ModelDrift"]
    assert float(firing[0]["value"]) == pytest.approx(0.42)
    assert {p for p, _ in webhook.received} == {"/ml-team-slack"}


def test_a_low_measured_accuracy_is_delivered_once_as_low_accuracy(
    stack: tuple[ServerProcess, Engine, PrometheusServer, Webhook],
) -> None:
    service, engine, _, webhook = stack
    version = served_version(service)
    # Too few labels: no figure is claimed (NaN), nothing to alert on.
    insert_performance(engine, version, {"accuracy": None, "f1": None}, labels=3)
    time.sleep(5)
    assert webhook.notifications("LowAccuracy") == []
    insert_performance(engine, version, {"accuracy": 0.71, "f1": 0.52})

    assert_delivered_once(webhook, "LowAccuracy", "ml-team-slack", version)
    assert len(webhook.notifications("ModelDrift")) == 1  # still once, still firing


def test_the_test_configs_keep_the_projects_routing(
    stack: tuple[ServerProcess, Engine, PrometheusServer, Webhook],
) -> None:
    """What the two tests above ran is the real rules and routing, only faster."""
    _, _, prometheus, _ = stack
    config = yaml.safe_load(prometheus.config.read_text())
    rules = yaml.safe_load(Path(config["rule_files"][0]).read_text())
    drift = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "ModelDrift")
    assert " ".join(drift["expr"].split()) == (
        "max by (model_version) (churn_feature_psi) and on (model_version) "
        "(max by (model_version) (churn_drift_status) == 2)"
    )
    assert drift["for"] == "2s"
