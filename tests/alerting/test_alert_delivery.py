"""The alerting path end to end, with real binaries: the service exports a stored drift
(or performance) result, a real Prometheus scrapes it and evaluates the project's rules,
a real Alertmanager routes the alert and delivers it to a webhook in this test, once,
however many times Prometheus re-sends it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import Engine

from launchers.alertmanager_process import AlertmanagerServer
from launchers.prometheus_process import PrometheusServer
from launchers.server_process import ServerProcess, free_port
from monitoring.database import make_engine, upgrade_schema
from tests.results_rows import insert_drift, insert_performance
from tests.serving.conftest import serve
from training.train import TrainingOutcome

pytestmark = pytest.mark.server

DELIVERY_TIMEOUT_S = 90
QUIET_S = 12
"""After the first delivery: about 12 evaluations and re-sends to Alertmanager, several
group intervals; any second notification would arrive in this time."""


class Webhook:
    """A local HTTP receiver: every POST body Alertmanager sends, with its path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def notifications(self, alertname: str) -> list[tuple[str, dict[str, Any]]]:
        return [(p, b) for p, b in self.received if b["groupLabels"].get("alertname") == alertname]

    def wait_for(self, alertname: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.notifications(alertname):
            if time.monotonic() > deadline:
                raise AssertionError(f"{alertname} not delivered in {timeout}s: {self.received}")
            time.sleep(0.2)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
    webhook = Webhook()
    alertmanager = AlertmanagerServer(webhook.url, tmp / "alertmanager")
    alertmanager.start()
    target = service.url.removeprefix("http://")
    prometheus = PrometheusServer([target], alertmanager.address, folder=tmp / "prometheus")
    prometheus.start()
    yield service, engine, prometheus, webhook
    prometheus.stop()
    alertmanager.stop()
    webhook.close()
    service.stop()
    engine.dispose()


def served_version(service: ServerProcess) -> str:
    version: str = httpx.get(f"{service.url}/health").json()["model_version"]
    return version


def assert_delivered_once(webhook: Webhook, alertname: str, receiver: str, version: str) -> None:
    webhook.wait_for(alertname, DELIVERY_TIMEOUT_S)
    time.sleep(QUIET_S)
    delivered = webhook.notifications(alertname)
    assert len(delivered) == 1, f"{alertname} delivered {len(delivered)} times: {delivered}"
    path, body = delivered[0]
    assert path == f"/{receiver}"  # routed by severity
    assert body["status"] == "firing"
    assert body["groupLabels"] == {"alertname": alertname, "model_version": version}
    (alert,) = body["alerts"]  # one alert per model version, however many columns
    assert alert["labels"]["service"] == "churn"  # Prometheus's external label
    assert alert["annotations"]["runbook_url"] == f"README.md#{alertname.lower()}"


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
    assert drift["expr"].strip() == "max by (model_version) (churn_feature_psi) >= 0.25"
    assert drift["for"] == "2s"
