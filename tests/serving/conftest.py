"""A real `bentoml serve` subprocess per scenario, on a free port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from training.server_process import start_server
from training.train import TrainingOutcome


@pytest.fixture(scope="session")
def server(trained: TrainingOutcome, session_dir: Path) -> Iterator[str]:
    """The service over the model trained for this session."""
    running = start_server(Path(os.environ["BENTOML_HOME"]), session_dir / "server.log")
    yield running.url
    running.stop()


@pytest.fixture(scope="session")
def server_without_model(session_dir: Path) -> Iterator[str]:
    """The service started over an empty model store."""
    home = session_dir / "empty-bentoml-home"
    home.mkdir(exist_ok=True)
    running = start_server(home, session_dir / "server-empty.log")
    yield running.url
    running.stop()
