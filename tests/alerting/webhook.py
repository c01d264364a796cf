"""What the alerting tests read on the receiving end: a local webhook Alertmanager
delivers to, and the checks that an alert arrived once, routed as the project routes it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from launchers.alertmanager_process import AlertmanagerServer
from launchers.prometheus_process import PrometheusServer
from launchers.server_process import ServerProcess, free_port

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


@contextmanager
def alerting_path(
    service: ServerProcess, folder: Path
) -> Iterator[tuple[PrometheusServer, Webhook]]:
    """A real Prometheus scraping `service` (1 s scrapes and evaluations, rules' `for` 2 s)
    → a real Alertmanager (the project's routing) → a webhook in the test."""
    webhook = Webhook()
    alertmanager = AlertmanagerServer(webhook.url, folder / "alertmanager")
    alertmanager.start()
    target = service.url.removeprefix("http://")
    prometheus = PrometheusServer([target], alertmanager.address, folder=folder / "prometheus")
    try:
        prometheus.start()
        yield prometheus, webhook
    finally:
        prometheus.stop()
        alertmanager.stop()
        webhook.close()
