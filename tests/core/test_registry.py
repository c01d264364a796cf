"""The registry decides what serves (issue 16): a real MLflow registry on a SQLite store in
a temporary folder, the session's trained model and copies of it saved under new versions."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import numpy as np
import pytest
import yaml
from bentoml._internal.models import ModelStore

from core.pipeline.integrity import (
    BENTOML_INFO_FILE,
    MANIFEST_FILE,
    ModelIntegrityError,
    write_manifest,
)
from core.pipeline.store import METADATA_FILE, PIPELINE_FILE, stored_predictor
from core.registry import (
    ARTIFACT_PATH,
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    ModelRegistry,
    RegistryError,
)
from core.settings import MODEL_NAME
from training.train import TrainingOutcome


@pytest.fixture
def source(tmp_path: Path) -> ModelStore:
    """A BentoML store of its own for copies, so the session's `:latest` stays the trained
    model for every other test."""
    return ModelStore(tmp_path / "source-store")


def copy_model(trained: TrainingOutcome, store: ModelStore, threshold: float | None = None) -> str:
    """The trained model saved again under a new version (optionally another threshold),
    with its own checksums: another model, as a retraining would give."""
    assert trained.tag is not None
    original = Path(bentoml.models.get(trained.tag).path)
    with bentoml.models.create(MODEL_NAME, _model_store=store) as model:
        folder = Path(model.path)
        for path in original.iterdir():
            if path.name not in (BENTOML_INFO_FILE, MANIFEST_FILE):
                shutil.copy(path, folder / path.name)
        metadata = yaml.safe_load((folder / METADATA_FILE).read_text())
        metadata["model_version"] = str(model.tag.version)
        (folder / METADATA_FILE).write_text(yaml.safe_dump(metadata, sort_keys=False))
        if threshold is not None:
            state = json.loads((folder / PIPELINE_FILE).read_text())
            (folder / PIPELINE_FILE).write_text(json.dumps({**state, "threshold": threshold}))
        write_manifest(folder, str(model.tag.version))
        return str(model.tag)


def empty_store(path: Path) -> ModelStore:
    path.mkdir()
    return ModelStore(path)


def artifact_folder(registry: ModelRegistry, version: str) -> Path:
    """Where the SQLite store's artifacts keep a version's files (beside the database)."""
    details = registry.client.get_model_version(registry.name, version)
    run = registry.client.get_run(details.run_id)
    return Path(run.info.artifact_uri.removeprefix("file://")) / ARTIFACT_PATH


def test_register_logs_the_model_folder_as_the_version_artifacts(
    trained: TrainingOutcome, registry: ModelRegistry
) -> None:
    assert trained.tag is not None
    assert registry.assignment().champion is None  # nothing registered: nothing serves
    version = registry.register(trained.tag, "trainer", "first model", {"rows": 20_000})
    assert registry.bentoml_tag(version) == trained.tag
    local = {p.name for p in Path(bentoml.models.get(trained.tag).path).iterdir()}
    assert {p.name for p in artifact_folder(registry, version).iterdir()} == local
    assert registry.register(trained.tag, "trainer", "again") == version  # one version per model
    # Registered is not serving: only an alias makes a version serve.
    assignment = registry.assignment()
    assert (assignment.champion, assignment.challenger, assignment.champion_tag) == (
        None,
        None,
        None,
    )
    (entry,) = registry.audit_trail()
    assert (entry.action, entry.version, entry.actor, entry.reason) == (
        "register",
        version,
        "trainer",
        "first model",
    )
    assert entry.figures == {"rows": 20_000}


def test_aliases_move_and_rollback_restores_the_previous_champion(
    trained: TrainingOutcome, registry: ModelRegistry, source: ModelStore
) -> None:
    tags = [copy_model(trained, source) for _ in range(3)]
    one, two, three = (registry.register(t, "trainer", "trained", store=source) for t in tags)
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback("ops", "nothing to roll back to")

    first = registry.set_champion(one, "ops", "day 0")
    assert (first.champion, first.previous_champion, first.challenger) == (one, None, None)
    assert first.champion_tag == tags[0] and first.challenger_share == 0.0

    trial = registry.set_challenger(two, "retrain", "drift", {"roc_auc": 0.85})
    assert (trial.champion, trial.challenger, trial.challenger_tag) == (one, two, tags[1])
    assert trial.challenger_share == 0.1  # CHURN_CHALLENGER_SHARE's default
    with pytest.raises(RegistryError, match="already the champion"):
        registry.set_champion(one, "ops", "again")
    with pytest.raises(RegistryError, match="no version 99"):
        registry.set_challenger("99", "ops", "typo")

    promoted = registry.set_champion(two, "promote", "non-inferior", {"auc_delta": 0.01})
    assert (promoted.champion, promoted.previous_champion) == (two, one)
    assert (promoted.challenger, promoted.challenger_share) == (None, 0.0)
    assert promoted.previous_champion_tag == tags[0]

    registry.set_challenger(three, "retrain", "schedule", share=0.25)
    assert registry.assignment().challenger_share == 0.25
    cleared = registry.clear_challenger("promote", "worse than the champion")
    assert (cleared.champion, cleared.challenger) == (two, None)
    with pytest.raises(RegistryError, match="no challenger"):
        registry.clear_challenger("promote", "twice")

    rolled = registry.rollback("monitor", "error rate 12 %", {"error_rate": 0.12})
    assert (rolled.champion, rolled.previous_champion) == (one, None)
    aliases = {
        k: str(v) for k, v in registry.client.get_registered_model(registry.name).aliases.items()
    }
    assert aliases == {CHAMPION: one}  # the rolled-back model is nobody's fallback

    # Another replica (its own client, nothing cached) sees the same roles.
    replica = ModelRegistry(registry.tracking_uri, registry.name)
    assert replica.assignment() == rolled


def test_audit_trail_is_newest_first_with_who_why_and_figures(
    trained: TrainingOutcome, registry: ModelRegistry, source: ModelStore
) -> None:
    one, two = (
        registry.register(copy_model(trained, source), "trainer", f"model {i}", store=source)
        for i in (1, 2)
    )
    registry.set_champion(one, "alice", "day 0", {"roc_auc": 0.84})
    registry.set_challenger(two, "cron", "drift trigger 7", share=0.1)
    registry.set_champion(two, "promote", "DeLong p=0.01", {"auc_delta": 0.02, "p": 0.01})
    registry.rollback("monitor", "accuracy 0.80 < 0.85", {"accuracy": 0.80})

    trail = ModelRegistry(registry.tracking_uri, registry.name).audit_trail()
    assert [(e.action, e.version, e.actor) for e in trail] == [
        ("rollback", one, "monitor"),
        ("set_champion", two, "promote"),
        ("set_challenger", two, "cron"),
        ("set_champion", one, "alice"),
        ("register", two, "trainer"),
        ("register", one, "trainer"),
    ]
    times = [e.at for e in trail]
    assert times == sorted(times, reverse=True) and all(t.tzinfo is not None for t in times)
    rollback, promotion, challenger = trail[0], trail[1], trail[2]
    assert rollback.reason == "accuracy 0.80 < 0.85" and rollback.figures == {"accuracy": 0.8}
    assert rollback.replaced == two and rollback.aliases == {CHAMPION: one}
    assert promotion.figures == {"auc_delta": 0.02, "p": 0.01} and promotion.replaced == one
    assert promotion.aliases == {CHAMPION: two, PREVIOUS_CHAMPION: one}
    assert challenger.figures == {"share": 0.1}
    assert challenger.aliases == {CHAMPION: one, CHALLENGER: two}
    with pytest.raises(ValueError, match="actor and a reason"):
        registry.set_challenger(two, "", "no actor")
    assert registry.assignment().challenger is None  # refused before any alias moved


def test_fetch_imports_into_an_empty_store_with_checksums_verified(
    trained: TrainingOutcome, registry: ModelRegistry, tmp_path: Path
) -> None:
    assert trained.tag is not None
    version = registry.register(trained.tag, "trainer", "first model")
    replica = empty_store(tmp_path / "replica-store")
    folder = registry.fetch(version, replica)
    assert str(bentoml.models.get(trained.tag, _model_store=replica).tag) == trained.tag
    assert folder.is_relative_to(tmp_path / "replica-store")
    stored = stored_predictor(folder, trained.tag.split(":")[1])
    expected = trained.predictor.predict_proba(trained.test_raw[:200])
    np.testing.assert_array_equal(stored.predictor.predict_proba(trained.test_raw[:200]), expected)
    assert registry.fetch(version, replica) == folder  # present: not downloaded again


def test_a_tampered_artifact_is_refused_and_never_enters_the_store(
    trained: TrainingOutcome, registry: ModelRegistry, tmp_path: Path
) -> None:
    assert trained.tag is not None
    version = registry.register(trained.tag, "trainer", "first model")
    artifacts = artifact_folder(registry, version)
    state = json.loads((artifacts / PIPELINE_FILE).read_text())
    (artifacts / PIPELINE_FILE).write_text(json.dumps({**state, "threshold": 0.01}))
    replica = empty_store(tmp_path / "replica-store")
    with pytest.raises(ModelIntegrityError, match=f"{PIPELINE_FILE}: checksum mismatch"):
        registry.fetch(version, replica)
    assert replica.list() == []

    # Files and manifest rewritten together pass the checksums, not the registered content
    # checksum.
    write_manifest(artifacts, trained.tag.split(":")[1])
    with pytest.raises(
        ModelIntegrityError, match=f"version {version}: content checksum .* registered"
    ):
        registry.fetch(version, replica)
    assert replica.list() == []


def test_a_local_copy_edited_after_fetching_is_refused(
    trained: TrainingOutcome, registry: ModelRegistry, tmp_path: Path
) -> None:
    assert trained.tag is not None
    version = registry.register(trained.tag, "trainer", "first model")
    replica = empty_store(tmp_path / "replica-store")
    folder = registry.fetch(version, replica)
    (folder / PIPELINE_FILE).write_text((folder / PIPELINE_FILE).read_text() + " ")
    with pytest.raises(ModelIntegrityError, match=f"{PIPELINE_FILE}: checksum mismatch"):
        registry.fetch(version, replica)


def test_mid_promotion_the_champion_is_not_also_the_challenger(
    trained: TrainingOutcome, registry: ModelRegistry, source: ModelStore
) -> None:
    """`set_champion` moves the champion alias before it drops the challenger's: a worker
    polling in between must not route a share of customers to the model that is champion."""
    one, two = (
        registry.register(copy_model(trained, source), "trainer", "trained", store=source)
        for _ in range(2)
    )
    registry.set_champion(one, "ops", "day 0")
    registry.set_challenger(two, "retrain", "drift", share=0.3)
    registry.client.set_registered_model_alias(registry.name, CHAMPION, two)  # the moment
    seen = registry.assignment()
    assert (seen.champion, seen.challenger, seen.challenger_share) == (two, None, 0.0)


def test_workers_fetching_at_once_share_one_complete_copy(
    trained: TrainingOutcome, registry: ModelRegistry, tmp_path: Path
) -> None:
    """The workers of a replica share its BentoML store and may all find the model missing
    at the same moment."""
    assert trained.tag is not None
    version = registry.register(trained.tag, "trainer", "first model")
    replica = empty_store(tmp_path / "replica-store")
    with ThreadPoolExecutor(4) as pool:
        folders = list(pool.map(lambda _: registry.fetch(version, replica), range(4)))
    assert len(set(folders)) == 1
    assert [str(model.tag) for model in replica.list()] == [trained.tag]
