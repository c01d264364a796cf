"""`churn registry`: the roles, their figures and the audit trail, against a real MLflow
store (SQLite, in the test's folder), and the refusals a hand-made change can meet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from core.registry import ModelRegistry
from core.settings import get_settings
from training.train import TrainingOutcome

runner = CliRunner()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelRegistry]:
    """The CLI's registry: a store of the test's own, found through the settings."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("CHURN_REGISTERED_MODEL", "churn_cli_test")
    get_settings.cache_clear()
    yield ModelRegistry()
    get_settings.cache_clear()


def test_show_lists_the_roles_figures_and_changes(
    registry: ModelRegistry, trained: TrainingOutcome
) -> None:
    assert trained.tag is not None
    registered = runner.invoke(app, ["registry", "register", trained.tag, "--reason", "day 0"])
    assert registered.exit_code == 0, registered.output
    version = registered.output.strip().rsplit(" ", 1)[1]
    registry.set_champion(version, "test", "first model")

    shown = runner.invoke(app, ["registry", "show"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    champion = next(line for line in lines if "│ champion " in line)
    assert version in champion and trained.tag.split(":")[1][:10] in champion
    accuracy = registry.training_figures(version)["accuracy"]
    assert f"accuracy {accuracy:.4f}" in champion
    assert "│ challenger " in shown.output and "│ previous_champion " in shown.output
    changes = [line for line in lines if "│ register " in line or "│ set_champion " in line]
    assert len(changes) == 2, shown.output
    assert "set_champion" in changes[0] and "register" in changes[-1]  # newest first
    assert "first model" in shown.output and "day 0" in shown.output


def test_hand_made_changes_are_refused_with_the_reason(
    registry: ModelRegistry, trained: TrainingOutcome
) -> None:
    unknown = runner.invoke(
        app, ["registry", "register", "churn_model:nosuchversion", "--reason", "x"]
    )
    assert unknown.exit_code == 2 and "no stored model" in unknown.output
    assert trained.tag is not None
    version = registry.register(trained.tag, "test", "day 0")
    registry.set_champion(version, "test", "first model")
    refused = runner.invoke(app, ["registry", "rollback", "--reason", "bad day"])
    assert refused.exit_code == 1
    assert "no previous champion" in refused.output
    assert registry.assignment().champion == version
    assert [e.action for e in registry.audit_trail()] == ["set_champion", "register"]
