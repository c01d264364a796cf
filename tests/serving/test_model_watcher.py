"""A worker follows the registry (issue 16): the checks a model passes before it serves,
and the watcher against a real MLflow registry on SQLite — champion, challenger, refusals
with the current model serving on, and the error-rate rollback."""

from __future__ import annotations

import json
from pathlib import Path

import bentoml
import pytest
from bentoml._internal.models import ModelStore
from prometheus_client import REGISTRY

from core.pipeline.golden import GOLDEN_FILE
from core.pipeline.integrity import write_manifest
from core.pipeline.store import PIPELINE_FILE, stored_predictor
from core.registry import ModelRegistry
from core.settings import Settings
from serving.model_checks import refusal
from serving.model_watcher import ModelWatcher
from serving.served_models import ErrorWindow, ServedModels
from tests.core.test_registry import artifact_folder, copy_model
from training.train import TrainingOutcome


def edit_copy(trained: TrainingOutcome, store: ModelStore, edit: str) -> str:
    """A copy of the trained model with one thing changed, its manifest rewritten (so only
    the check under test can catch it): 'calibration' moves its probabilities away from
    the golden ones; 'no-golden' drops the golden file."""
    tag = copy_model(trained, store)
    folder = Path(bentoml.models.get(tag, _model_store=store).path)
    if edit == "calibration":
        state = json.loads((folder / PIPELINE_FILE).read_text())
        state["calibration"]["intercept"] += 0.5
        (folder / PIPELINE_FILE).write_text(json.dumps(state))
    elif edit == "no-golden":
        (folder / GOLDEN_FILE).unlink()
    write_manifest(folder, tag.split(":")[1])
    return tag


@pytest.fixture
def source(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "source")


@pytest.fixture
def replica_store(tmp_path: Path) -> ModelStore:
    """The store of the replica the watcher serves (not the session's)."""
    (tmp_path / "replica").mkdir()
    return ModelStore(tmp_path / "replica")


class Worker:
    """What the service gives a watcher: its served set, and the swap."""

    def __init__(self) -> None:
        self.served: ServedModels | None = None
        self.swaps: list[ServedModels] = []

    def serve(self, served: ServedModels) -> None:
        self.served = served
        self.swaps.append(served)


def watcher_for(
    registry: ModelRegistry, store: ModelStore, worker: Worker, **settings: object
) -> ModelWatcher:
    errors = ErrorWindow(int(settings.get("rollback_min_answers", 100)))  # type: ignore[call-overload]
    return ModelWatcher(
        registry, lambda: worker.served, worker.serve, Settings(**settings), errors, store
    )


def refusals(check: str) -> float:
    return REGISTRY.get_sample_value("churn_model_refusals_total", {"check": check}) or 0.0


# The checks.


def test_the_trained_model_passes_every_check(trained: TrainingOutcome) -> None:
    stored = stored_predictor(Path(bentoml.models.get(trained.tag).path), trained.tag.split(":")[1])  # type: ignore[union-attr]
    assert refusal(stored, trained.predictor, Settings()) is None


def test_other_probabilities_than_recorded_fail_the_golden_check(
    trained: TrainingOutcome, source: ModelStore
) -> None:
    tag = edit_copy(trained, source, "calibration")
    stored = stored_predictor(
        Path(bentoml.models.get(tag, _model_store=source).path), tag.split(":")[1]
    )
    found = refusal(stored, trained.predictor, Settings())
    assert found is not None and found.check == "golden"
    assert "differs by" in found.reason


def test_a_model_without_golden_predictions_is_refused(
    trained: TrainingOutcome, source: ModelStore
) -> None:
    tag = edit_copy(trained, source, "no-golden")
    stored = stored_predictor(
        Path(bentoml.models.get(tag, _model_store=source).path), tag.split(":")[1]
    )
    found = refusal(stored, None, Settings())
    assert found is not None and found.check == "golden" and GOLDEN_FILE in found.reason


def test_a_slow_model_fails_the_latency_check(trained: TrainingOutcome) -> None:
    stored = stored_predictor(Path(bentoml.models.get(trained.tag).path), trained.tag.split(":")[1])  # type: ignore[union-attr]
    found = refusal(stored, None, Settings(swap_max_latency_ms=1e-4))
    assert found is not None and found.check == "latency"
    assert "CHURN_SWAP_MAX_LATENCY_MS" in found.reason


# The watcher.


def test_the_worker_serves_the_champion_then_the_challenger_beside_it(
    trained: TrainingOutcome, source: ModelStore, replica_store: ModelStore, registry: ModelRegistry
) -> None:
    first = registry.register(copy_model(trained, source), "test", "day 0", store=source)
    second = registry.register(copy_model(trained, source), "test", "retrained", store=source)
    registry.set_champion(first, "test", "day 0")
    worker = Worker()
    watcher = watcher_for(registry, replica_store, worker)
    watcher.poll()
    assert worker.served is not None and worker.served.champion_registered == first
    assert worker.served.challenger is None
    watcher.poll()
    assert len(worker.swaps) == 1  # nothing changed: no second load

    registry.set_challenger(second, "test", "try it", share=0.25)
    watcher.poll()
    served = worker.served
    assert served.challenger_registered == second and served.share == 0.25
    assert served.champion is worker.swaps[0].champion  # the champion was not reloaded
    assert served.challenger.version == registry.bentoml_tag(second).split(":")[1]

    registry.set_champion(second, "test", "promoted")
    watcher.poll()
    served = worker.served
    assert served.champion_registered == second and served.challenger is None
    assert served.champion is worker.swaps[1].challenger  # the warm challenger took over
    assert served.fallback is worker.swaps[0].champion  # the old champion is kept loaded


def test_a_tampered_champion_is_refused_and_the_current_one_serves_on(
    trained: TrainingOutcome, source: ModelStore, replica_store: ModelStore, registry: ModelRegistry
) -> None:
    first = registry.register(copy_model(trained, source), "test", "day 0", store=source)
    bad = registry.register(copy_model(trained, source), "test", "retrained", store=source)
    registry.set_champion(first, "test", "day 0")
    worker = Worker()
    watcher = watcher_for(registry, replica_store, worker)
    watcher.poll()
    booster = artifact_folder(registry, bad) / "model.json"
    booster.write_bytes(booster.read_bytes().replace(b'"', b"'", 1))
    before = refusals("checksum")
    registry.set_champion(bad, "test", "promoted")
    watcher.poll()
    assert worker.served.champion_registered == first and len(worker.swaps) == 1
    assert refusals("checksum") == before + 1
    refused = [e for e in registry.audit_trail() if e.action == "refused"]
    assert refused and refused[0].version == bad and refused[0].actor.startswith("service:")
    assert "checksum" in refused[0].reason
    watcher.poll()  # not tried again until the assignment changes
    assert refusals("checksum") == before + 1


def test_a_challenger_failing_its_checks_leaves_the_champion_alone(
    trained: TrainingOutcome, source: ModelStore, replica_store: ModelStore, registry: ModelRegistry
) -> None:
    first = registry.register(copy_model(trained, source), "test", "day 0", store=source)
    other = registry.register(edit_copy(trained, source, "calibration"), "t", "r", store=source)
    registry.set_champion(first, "test", "day 0")
    registry.set_challenger(other, "test", "try it")
    worker = Worker()
    watcher_for(registry, replica_store, worker).poll()
    assert worker.served.champion_registered == first
    assert worker.served.challenger is None and worker.served.share == 0.0
    assert registry.audit_trail()[0].action == "refused"


def test_a_champion_failing_too_often_is_rolled_back_by_the_worker(
    trained: TrainingOutcome, source: ModelStore, replica_store: ModelStore, registry: ModelRegistry
) -> None:
    first = registry.register(copy_model(trained, source), "test", "day 0", store=source)
    second = registry.register(copy_model(trained, source), "test", "retrained", store=source)
    registry.set_champion(first, "test", "day 0")
    registry.set_champion(second, "test", "promoted")
    worker = Worker()
    watcher = watcher_for(registry, replica_store, worker, rollback_min_answers=50)
    watcher.poll()
    version = worker.served.champion.version
    watcher._errors.record(version, 45, failed=False)
    watcher._errors.record(version, 5, failed=True)  # exactly 10 %: not above the bar
    watcher.poll()
    assert registry.assignment().champion == second
    watcher._errors.record(version, 1, failed=True)  # 6 of the last 50: 12 %
    watcher.poll()
    assert registry.assignment().champion == first
    assert worker.served.champion_registered == first
    entry = registry.audit_trail()[0]
    assert entry.action == "rollback" and entry.actor.startswith("service:")
    assert entry.figures["error_rate"] == pytest.approx(0.12)
