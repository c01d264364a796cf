"""The service image, built once per session by the README's command and shared by the
image test and the compose smoke test (a second build would cost up to 3 minutes of CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from training.train import TrainingOutcome

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = PROJECT_ROOT / "deploy" / "containers.conf"


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    """Run podman with the project's containers.conf; its stdout."""
    done = subprocess.run(
        ["podman", *args],
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr[-3000:]}"
    return done.stdout


@dataclass
class Built:
    image: str
    dockerfile: Path
    """The Dockerfile BentoML generated (from deploy/Dockerfile.template), in the Bento."""


@pytest.fixture(scope="session")
def built(trained: TrainingOutcome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """The image, built by the README's command over a store holding the session's model."""
    home = tmp_path_factory.mktemp("image") / "bentoml"
    shutil.copytree(Path(os.environ["BENTOML_HOME"]) / "models", home / "models")
    name = f"localhost/churn_service:test-{os.getpid()}"
    env = {**os.environ, "BENTOML_HOME": str(home), "CHURN_IMAGE": name}
    started = time.monotonic()
    done = subprocess.run(  # `make image` is this after setting up .venv
        [str(PROJECT_ROOT / "deploy" / "image.sh"), "build"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    size = int(podman("image", "inspect", "--format", "{{.Size}}", name).strip())
    print(f"\nimage {name}: built in {time.monotonic() - started:.0f} s, {size / 1e6:.0f} MB")
    (dockerfile,) = home.glob("bentos/churn_service/*/env/docker/Dockerfile")
    yield Built(name, dockerfile)
    image_id = podman("image", "inspect", "--format", "{{.Id}}", name).strip()
    podman("rmi", "-f", image_id, check=False)
