"""Issue 17, acceptance 2: docker-compose.yml brought up for real with podman-compose (the
README's `deploy/compose.sh up`): the service answers predictions and takes labels with the
API key from the compose file's secret, Prometheus (the project's rules) scrapes it by
service name, and after `down` and `up` the predictions and labels are still in PostgreSQL
(named volumes). Grafana (profile `grafana`, a registry's image) is not started here.

Its own project name, published ports and secrets folder, so a developer's stack on the
same machine is untouched; `down -v` at the end leaves no container, network or volume."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from launchers.server_process import free_port
from tests.deploy.conftest import CONTAINERS_CONF, Built
from tests.deploy.test_image import readme_example

pytestmark = pytest.mark.container

PROJECT_ROOT = Path(__file__).resolve().parents[2]
READY_S = 300
"""PostgreSQL initialises its volume, the service retries it, loads the model, 2 workers."""


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    api: str
    prometheus: str
    key: str
    password: str

    def compose(self, *args: str, timeout: float = 600) -> str:
        done = subprocess.run(
            [str(PROJECT_ROOT / "deploy" / "compose.sh"), "-p", self.project, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"compose {args}: {done.stderr[-4000:]}"
        return done.stdout

    def up(self) -> None:
        self.compose("up", "-d")
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api}/readyz", timeout=3).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        logs = self.compose("logs", "--tail", "40", "api", "postgres")
        raise AssertionError(f"api not ready within {READY_S} s: {logs[-6000:]}")

    def psql(self, query: str) -> str:
        container = f"{self.project}_postgres_1"
        psql = ["psql", "-h", "/tmp", "-U", "churn", "-d", "churn", "-tAc", query]
        done = subprocess.run(
            ["podman", "exec", "-e", f"PGPASSWORD={self.password}", container, *psql],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def service_image(request: pytest.FixtureRequest) -> str:
    """The service image: CHURN_COMPOSE_IMAGE if given (reuse one), else the session's
    (tests/deploy/conftest.py: the README's command over the session's model)."""
    if given := os.environ.get("CHURN_COMPOSE_IMAGE"):
        return given
    built: Built = request.getfixturevalue("built")
    return built.image


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("compose")
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    image = service_image(request)
    started = time.monotonic()
    secrets = folder / "secrets"
    env |= {
        "CHURN_IMAGE": image,
        "CHURN_SECRETS_DIR": str(secrets),
        "CHURN_RATE_LIMIT": "1000000/minute",
        "CHURN_API_PORT": str(free_port()),
        "CHURN_PROMETHEUS_PORT": str(free_port()),
        "CHURN_MLFLOW_PORT": str(free_port()),
        "CHURN_ALERTMANAGER_PORT": str(free_port()),
    }
    subprocess.run(
        [str(PROJECT_ROOT / "deploy" / "compose.sh"), "stack-images"], env=env, check=True
    )
    subprocess.run([str(PROJECT_ROOT / "deploy" / "compose.sh"), "secrets"], env=env, check=True)
    stack = Stack(
        project=f"churn-test-{os.getpid()}",
        env=env,
        api=f"http://127.0.0.1:{env['CHURN_API_PORT']}",
        prometheus=f"http://127.0.0.1:{env['CHURN_PROMETHEUS_PORT']}",
        key=(secrets / "churn-api-keys").read_text().split()[0],
        password=(secrets / "postgres-password").read_text().strip(),
    )
    try:
        stack.up()
        print(f"\ncompose up (images present): ready in {time.monotonic() - started:.0f} s")
        yield stack
    finally:
        stack.compose("down", "-v", "-t", "30")


def test_the_stack_serves_scrapes_and_keeps_its_data_across_down_and_up(stack: Stack) -> None:
    auth = {"X-API-Key": stack.key}
    body = readme_example()
    assert httpx.post(f"{stack.api}/predict", json=body, timeout=30).status_code == 401
    request_ids = []
    for n in range(5):
        answer = httpx.post(
            f"{stack.api}/predict",
            json={**body, "customer_id": f"compose-{n}"},
            headers=auth,
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        request_ids.append(answer.headers["X-Request-ID"])
    labels = [
        {"customer_id": f"compose-{n}", "churned": n % 2 == 0, "observed_date": "2026-11-30"}
        for n in range(5)
    ]
    stored = httpx.post(f"{stack.api}/feedback", json=labels, headers=auth, timeout=30)
    assert stored.status_code == 200 and stored.json() == {"stored": 5}, stored.text

    # Prometheus, configured by the compose file, scrapes the service by its name.
    deadline = time.monotonic() + 90
    up: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        try:
            up = httpx.get(
                f"{stack.prometheus}/api/v1/query",
                params={"query": 'up{job="churn-service"} == 1'},
                timeout=5,
            ).json()["data"]["result"]
        except (httpx.HTTPError, json.JSONDecodeError, KeyError):
            up = []
        if up:
            break
        time.sleep(2)
    assert up, "Prometheus does not see the api up"
    rules = httpx.get(f"{stack.prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert any(r["name"] == "ServiceDown" for g in rules for r in g["rules"])
    # ...and sends its alerts to the compose file's Alertmanager.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = httpx.get(f"{stack.prometheus}/api/v1/alertmanagers", timeout=5).json()["data"]
        if found["activeAlertmanagers"]:
            break
        time.sleep(2)
    assert [a["url"] for a in found["activeAlertmanagers"]] == [
        "http://alertmanager:9093/api/v2/alerts"
    ]

    quoted = ", ".join(f"'{r}'" for r in request_ids)
    count = f"select count(*) from predictions where request_id in ({quoted})"
    deadline = time.monotonic() + 30
    while stack.psql(count) != "5" and time.monotonic() < deadline:
        time.sleep(1)
    assert stack.psql(count) == "5"

    stack.compose("down", "-t", "30")
    started = time.monotonic()
    stack.up()
    print(f"\ncompose down + up: ready again in {time.monotonic() - started:.0f} s")
    assert stack.psql(count) == "5", "predictions lost across down/up"
    assert stack.psql("select count(*) from ground_truth") == "5", "labels lost across down/up"
    again = httpx.post(f"{stack.api}/predict", json=body, headers=auth, timeout=30)
    assert again.status_code == 200, again.text
