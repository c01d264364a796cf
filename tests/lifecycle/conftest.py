"""Fixtures the promotion and guard tests share: a SQLite prediction log of the test's own,
and the settings that point in-process `churn` commands at it and at the test's registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from core.registry import ModelRegistry
from core.settings import get_settings
from monitoring.database import make_engine, upgrade_schema


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/db/predictions.db")
    upgrade_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def cli_env(
    registry: ModelRegistry, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pytest.MonkeyPatch]:
    """`CliRunner` commands read this test's registry and log; more settings can be set
    on the returned monkeypatch (call `get_settings.cache_clear()` after)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.setenv("CHURN_REGISTERED_MODEL", registry.name)
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()
