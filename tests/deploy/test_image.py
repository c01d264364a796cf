"""Issue 17, acceptance 1: the README's image command builds the service's container image
(`deploy/image.sh build`, real Podman), and the image, configured as in production —
settings in the environment, secrets in files (Podman secrets), the prediction log in
PostgreSQL, the journal and spool on a volume — starts as a non-root user, is ready, answers
the README's example exactly as `bentoml serve` does, serves the registry's champion when
told to, and drains on SIGTERM under load within its stop grace period with every answered
prediction's row in the log."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from bentoml._internal.models import ModelStore
from sqlalchemy import select

from core.registry import ModelRegistry
from launchers.pg_server import PostgresServer
from launchers.server_process import free_port, request_bodies, start_server
from monitoring.database import PREDICTIONS, make_engine
from monitoring.identity import customer_hash
from tests.deploy.conftest import CONTAINERS_CONF, Built, podman
from tests.lifecycle.model_variants import variant
from tests.serving.conftest import KEYS, SECRET
from tests.serving.load import IdLoad
from tests.serving.test_durability import logged_request_ids
from training.train import TrainingOutcome

pytestmark = pytest.mark.container

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BENTO_UID = 1034
"""BentoML's `bentoml` user in the image (owns the volume the test mounts)."""
STOP_GRACE_S = 30
READY_S = 180
AUTH = {"X-API-Key": KEYS[0]}


def readme_example() -> dict[str, Any]:
    """The `/predict` body of the README's "Try it" curl."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    (body,) = re.findall(r"curl -s -X POST localhost:3000/predict .*? -d '(\{.*?\})'", readme, re.S)
    parsed: dict[str, Any] = json.loads(body)
    return parsed


@pytest.fixture(scope="module")
def image(built: Built) -> str:
    return built.image


@dataclass
class Container:
    name: str
    url: str
    secrets: list[str] = field(default_factory=list)

    def logs(self) -> str:
        done = subprocess.run(
            ["podman", "logs", self.name],
            env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return (done.stdout + done.stderr)[-4000:]

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)
        for secret in self.secrets:
            podman("secret", "rm", secret, check=False)


def start_container(
    image: str,
    state: Path,
    secrets: dict[str, str],
    env: dict[str, str],
    tag: str,
    shared: Path | None = None,
) -> Container:
    """`podman run` the image as production would: settings in `env`, each of `secrets`
    (variable → content) a Podman secret whose file `<variable>_FILE` names, `state`
    mounted for the journal and spool (and `shared` at its own path). Waits for `/readyz`."""
    state.mkdir(parents=True, exist_ok=True)
    os.chown(state, BENTO_UID, BENTO_UID)
    port = free_port()
    container = Container(f"churn-test-{os.getpid()}-{tag}", f"http://127.0.0.1:{port}")
    args = ["run", "-d", "--name", container.name, "--network", "host"]
    args += ["--stop-timeout", str(STOP_GRACE_S), "-v", f"{state}:/var/lib/churn"]
    if shared is not None:
        args += ["-v", f"{shared}:{shared}"]
    for variable, content in secrets.items():
        secret = f"{container.name}-{variable.lower().replace('_', '-')}"
        (state.parent / secret).write_text(content + "\n")
        podman("secret", "create", secret, str(state.parent / secret))
        container.secrets.append(secret)
        args += ["--secret", secret, "-e", f"{variable}_FILE=/run/secrets/{secret}"]
    settings = {
        "CHURN_DATA_DIR": "/var/lib/churn",
        "CHURN_SPOOL_DIR": "/var/lib/churn/spool",
        "CHURN_WORKERS": "2",
        "CHURN_RATE_LIMIT": "1000000/minute",
        **env,
    }
    for variable, value in settings.items():
        args += ["-e", f"{variable}={value}"]
    podman(*args, image, "--port", str(port), "--host", "127.0.0.1")
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        state_now = podman("inspect", "--format", "{{.State.Status}}", container.name).strip()
        assert state_now == "running", f"container {state_now}: {container.logs()}"
        try:
            if httpx.get(f"{container.url}/readyz", timeout=2).status_code == 200:
                return container
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    logs = container.logs()
    container.remove()
    raise AssertionError(f"not ready within {READY_S} s: {logs}")


@pytest.fixture(scope="module")
def database(postgres: PostgresServer) -> str:
    return postgres.new_database()


@pytest.fixture(scope="module")
def served(
    image: str, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Container]:
    """The image serving its own model (CHURN_MODEL_SOURCE=store)."""
    folder = tmp_path_factory.mktemp("served")
    secrets = {
        "CHURN_API_KEYS": "\n".join(KEYS),
        "CHURN_ID_HASH_SECRET": SECRET,
        "DATABASE_URL": database,
    }
    container = start_container(
        image, folder / "state", secrets, {"CHURN_MODEL_SOURCE": "store"}, "store"
    )
    yield container
    container.remove()


def test_the_dockerfiles_pass_hadolint(built: Built) -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    for dockerfile in (built.dockerfile, PROJECT_ROOT / "deploy" / "Containerfile.base"):
        linted = subprocess.run(
            [str(hadolint), "--no-color", str(dockerfile)], capture_output=True, text=True
        )
        assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_image_runs_as_a_non_root_user(built: Built, served: Container) -> None:
    # Numeric, so that an orchestrator can verify it before starting (runAsNonRoot).
    user = podman("image", "inspect", "--format", "{{.Config.User}}", built.image).strip()
    assert user == f"{BENTO_UID}:{BENTO_UID}"
    status = podman("exec", served.name, "cat", "/proc/1/status")
    (uids,) = re.findall(r"^Uid:\s+(.*)$", status, re.M)
    assert {int(uid) for uid in uids.split()} == {BENTO_UID}, uids
    # ...and cannot change the packages it runs.
    probe = "import xgboost, pathlib; print(pathlib.Path(xgboost.__file__).parent)"
    packages = podman("exec", served.name, "python", "-c", probe).strip()
    touched = subprocess.run(
        ["podman", "exec", served.name, "touch", f"{packages}/planted.py"],
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert touched.returncode != 0 and "Permission denied" in touched.stderr, touched


def test_the_readmes_example_gets_the_same_answer_as_bentoml_serve(
    served: Container, trained: TrainingOutcome, database: str, tmp_path: Path
) -> None:
    body = readme_example()
    assert httpx.post(f"{served.url}/predict", json=body).status_code == 401  # keys from file
    answer = httpx.post(f"{served.url}/predict", json=body, headers=AUTH, timeout=30)
    assert answer.status_code == 200, answer.text
    local = start_server(
        Path(os.environ["BENTOML_HOME"]), tmp_path / "serve.log", {"CHURN_MODEL_SOURCE": "store"}
    )
    try:
        expected = httpx.post(f"{local.url}/predict", json=body, timeout=30)
    finally:
        local.stop()
    assert expected.status_code == 200, expected.text
    assert answer.json()["model_version"] == trained.tag.split(":")[1]
    for key in ("churn_probability", "will_churn", "risk_level", "top_reasons", "model_version"):
        assert answer.json()[key] == expected.json()[key], key
    # The row is logged in PostgreSQL (its URL a secret file) under the HMAC of the id with
    # the key from the other secret file.
    request_id = answer.headers["X-Request-ID"]
    engine = make_engine(database)
    try:
        deadline = time.monotonic() + 30
        while request_id not in logged_request_ids(engine) and time.monotonic() < deadline:
            time.sleep(0.3)
        with engine.connect() as connection:
            row = connection.execute(
                select(PREDICTIONS).where(PREDICTIONS.c.request_id == request_id)
            ).one()
    finally:
        engine.dispose()
    assert row.customer_hash == customer_hash(body["customer_id"], SECRET.encode())


def test_sigterm_under_load_drains_within_the_grace_period_with_every_row_logged(
    served: Container, trained: TrainingOutcome, database: str
) -> None:
    bodies = request_bodies(trained.test_frame.iloc[:300])
    with IdLoad(served.url, bodies, clients=16, seconds=15, headers=AUTH) as load:
        time.sleep(5)
        answered_before = len(load.answered.get(200, []))
        started = time.monotonic()
        podman("stop", "-t", str(STOP_GRACE_S), served.name, timeout=STOP_GRACE_S + 30)
        stopped_in = time.monotonic() - started
    exit_code = int(podman("inspect", "--format", "{{.State.ExitCode}}", served.name).strip())
    answered = set(load.answered.get(200, []))
    assert answered_before > 50, f"too little load before the stop: {load.answered.keys()}"
    assert stopped_in < STOP_GRACE_S - 5, f"stop took {stopped_in:.1f} s (SIGKILL at 30)"
    assert exit_code != 137, f"killed, not stopped: {served.logs()}"
    # Every answered prediction's row is in the database once the container has exited:
    # none is left behind in the journal or the spool for a later start to replay.
    engine = make_engine(database)
    try:
        missing = answered - logged_request_ids(engine)
    finally:
        engine.dispose()
    assert not missing, f"{len(missing)} of {len(answered)} answered rows not logged"
    print(f"\nSIGTERM under load: {len(answered)} answered, stopped in {stopped_in:.1f} s")


def test_the_image_serves_the_champion_the_registry_assigns(
    image: str, trained: TrainingOutcome, tmp_path: Path
) -> None:
    """CHURN_MODEL_SOURCE=registry: the registry's champion (a version the Bento does not
    hold), fetched from the registry, not the Bento's own model."""
    registry = ModelRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", "churn_image")
    source = ModelStore(tmp_path / "source-store")
    champion_tag = variant(trained, source, intercept_shift=0.5)
    champion = registry.register(champion_tag, "test", "the image's registry test", store=source)
    registry.set_champion(champion, "test", "serves in the image")
    for path in [tmp_path, *tmp_path.rglob("*")]:  # the registry's SQLite file and artifacts
        os.chown(path, BENTO_UID, BENTO_UID)
    settings = {
        "CHURN_MODEL_SOURCE": "registry",
        "CHURN_REGISTERED_MODEL": registry.name,
        "DATABASE_URL": "sqlite:////var/lib/churn/predictions.db",  # the log on the volume
    }
    container = start_container(
        image,
        tmp_path / "state",
        {"MLFLOW_TRACKING_URI": registry.tracking_uri},
        settings,
        "registry",
        shared=tmp_path,  # the registry's artifact paths are the host's
    )
    try:
        answer = httpx.post(f"{container.url}/predict", json=readme_example(), timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_version"] == champion_tag.split(":")[1]
        assert answer.json()["model_version"] != trained.tag.split(":")[1]
    finally:
        container.remove()
