"""A real `bentoml serve` subprocess per scenario, on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from training.train import TrainingOutcome

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(bentoml_home: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `bentoml serve service:ChurnService` and wait until it answers /readyz."""
    port = free_port()
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home)}
    bentoml = Path(sys.executable).with_name("bentoml")
    log = log_path.open("wb")
    process = subprocess.Popen(
        [str(bentoml), "serve", "service:ChurnService", "--port", str(port), "--host", "127.0.0.1"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"server not ready in {STARTUP_SECONDS}s: {log_path.read_text()[-3000:]}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def server(trained: TrainingOutcome, session_dir: Path) -> Iterator[str]:
    """The service over the model trained for this session."""
    process, url = start_server(Path(os.environ["BENTOML_HOME"]), session_dir / "server.log")
    yield url
    stop_server(process)


@pytest.fixture(scope="session")
def server_without_model(session_dir: Path) -> Iterator[str]:
    """The service started over an empty model store."""
    home = session_dir / "empty-bentoml-home"
    home.mkdir(exist_ok=True)
    process, url = start_server(home, session_dir / "server-empty.log")
    yield url
    stop_server(process)
