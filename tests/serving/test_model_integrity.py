"""Model integrity: each corrupt copy of the session's model is served by the service in
this process over a store of its own (API keys, real Redis), which must start, stay alive
and refuse to score, saying why without a stack trace or a path; and the cache is keyed by
the model's content."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client

from core.pipeline.golden import GOLDEN_FILE
from core.pipeline.integrity import MANIFEST_FILE, verify_manifest, write_manifest
from core.pipeline.store import (
    BOOSTER_FILE,
    METADATA_FILE,
    PIPELINE_FILE,
    REFERENCE_FILE,
    REFERENCE_INPUTS_FILE,
    REFERENCE_PREDICTIONS_FILE,
    stored_predictor,
)
from core.schema import CustomerData
from core.settings import MODEL_NAME, get_settings
from launchers.redis_process import RedisServer
from launchers.server_process import request_bodies
from serving.scoring import LoadedModel, score_batch
from tests.serving.conftest import KEYS, AppWith, deployed_settings
from training.train import TrainingOutcome

AUTH = {"X-API-Key": KEYS[0]}
Edit = Callable[[Path], None]


def _booster(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / BOOSTER_FILE).read_text()))


def change_base_score(folder: Path) -> None:
    booster = _booster(folder)
    booster["learner"]["learner_model_param"]["base_score"] = "[5E-1]"
    (folder / BOOSTER_FILE).write_text(json.dumps(booster))


def flip_a_leaf(folder: Path) -> None:
    booster = _booster(folder)
    tree = booster["learner"]["gradient_booster"]["model"]["trees"][0]
    leaf = tree["left_children"].index(-1)
    tree["split_conditions"][leaf] = -tree["split_conditions"][leaf]
    tree["base_weights"][leaf] = -tree["base_weights"][leaf]
    (folder / BOOSTER_FILE).write_text(json.dumps(booster))


def nan_threshold(folder: Path) -> None:
    pipeline = json.loads((folder / PIPELINE_FILE).read_text())
    pipeline["threshold"] = math.nan
    (folder / PIPELINE_FILE).write_text(json.dumps(pipeline))


def truncate_model_yaml(folder: Path) -> None:
    text = (folder / "model.yaml").read_text()
    (folder / "model.yaml").write_text(text[: len(text) // 3])


def garbage_model_yaml(folder: Path) -> None:
    (folder / "model.yaml").write_text("name: [churn_model\n\x00: {{{")


def delete_reference(folder: Path) -> None:
    (folder / REFERENCE_FILE).unlink()


def add_a_file(folder: Path) -> None:
    (folder / "patch.json").write_text("{}")


def drop_manifest(folder: Path) -> None:
    """A model saved before checksums existed."""
    (folder / MANIFEST_FILE).unlink(missing_ok=True)


def corrupt_booster_and_reseal(folder: Path) -> None:
    """A booster XGBoost refuses, under a manifest rewritten to match: the load itself
    fails, and XGBoost's message carries its stack trace and the file's absolute path."""
    (folder / BOOSTER_FILE).write_text("[]")
    write_manifest(folder, folder.name)


def sign_with_another_key(folder: Path) -> None:
    """Signed, but not with the key the service is configured with."""
    write_manifest(folder, folder.name, b"not-the-serving-key")


SERVING_KEY = {"CHURN_MODEL_SIGNING_KEY": "the-serving-key"}
CASES: dict[str, tuple[Edit, str]] = {
    "base_score": (change_base_score, "model.json: checksum mismatch"),
    "flipped_leaf": (flip_a_leaf, "model.json: checksum mismatch"),
    "nan_threshold": (nan_threshold, "pipeline.json: checksum mismatch"),
    "truncated_model_yaml": (truncate_model_yaml, "model.yaml cannot be read"),
    "garbage_model_yaml": (garbage_model_yaml, "model.yaml cannot be read"),
    "deleted_file": (delete_reference, "reference.parquet: missing"),
    "extra_file": (add_a_file, "patch.json: unexpected file"),
    "no_checksums": (drop_manifest, "checksums.json: missing"),
    "xgboost_error": (corrupt_booster_and_reseal, "Invalid model format in: `model.json`"),
    "wrong_signature": (sign_with_another_key, "checksums.json: signature mismatch"),
    "unsigned": (lambda folder: None, "checksums.json: not signed"),
}
"""Each corruption and the words its refusal must contain."""
SIGNED_CASES = {"wrong_signature", "unsigned"}
"""Served with `SERVING_KEY`: models must be signed with it."""


def model_folder(trained: TrainingOutcome) -> Path:
    version = (trained.tag or "").split(":")[1]
    return Path(os.environ["BENTOML_HOME"]) / "models" / MODEL_NAME / version


def copy_home(trained: TrainingOutcome, home: Path, edit: Edit | None = None) -> Path:
    """A BentoML home holding only (a copy of) the session's model, edited by `edit`."""
    source = model_folder(trained)
    target = home / "models" / MODEL_NAME / source.name
    shutil.copytree(source, target)
    (target.parent / "latest").write_text(source.name)
    if edit is not None:
        edit(target)
    return target


@pytest.fixture(scope="module")
def body(trained: TrainingOutcome) -> dict[str, Any]:
    return request_bodies(trained.test_frame.iloc[:1])[0]


@pytest.fixture(scope="module")
def corrupt_homes(
    tmp_path_factory: pytest.TempPathFactory, trained: TrainingOutcome
) -> dict[str, Path]:
    """One BentoML home per corruption."""
    homes = {}
    for name, (edit, _) in CASES.items():
        homes[name] = tmp_path_factory.mktemp(f"corrupt-{name}")
        copy_home(trained, homes[name], edit)
    return homes


def assert_path_free(reason: str, home: Path) -> None:
    assert str(home) not in reason and os.environ["BENTOML_HOME"] not in reason
    assert "Stack trace" not in reason and "[bt]" not in reason and "\n" not in reason
    assert not re.search(r"""(^|[\s'"(=])/[\w.]""", reason), reason  # no absolute path


@pytest.mark.parametrize("case", list(CASES))
def test_a_corrupt_model_starts_unhealthy_and_refuses_to_score(
    case: str,
    corrupt_homes: dict[str, Path],
    app_with: AppWith,
    redis_server: RedisServer,
    body: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    home, expected = corrupt_homes[case], CASES[case][1]
    signing = SERVING_KEY if case in SIGNED_CASES else {}
    # Starting raises nothing: the instance is built and the app answers.
    app = app_with(home=home, **deployed_settings(None, redis_server.url, **signing))
    health = app.get("/health").json()
    assert health["status"] == "unhealthy" and health["model_loaded"] is False, health
    assert health["model_version"] is None
    assert expected in health["detail"], health["detail"]
    assert_path_free(health["detail"], home)
    assert app.get("/livez").status_code == 200
    assert app.get("/readyz").status_code == 503
    answer = app.post("/predict", json=body, headers=AUTH)
    assert answer.status_code == 503 and expected in answer.json()["error"], answer.text
    assert_path_free(answer.json()["error"], home)
    batch = app.post("/predict/batch", json=[body], headers=AUTH)
    assert batch.status_code == 503 and expected in batch.json()["error"], batch.text
    # The full story stays in the server log.
    log = caplog.text
    if case == "xgboost_error":  # XGBoost's own message: stack trace and absolute path
        assert "Stack trace" in log and f"{home / 'models' / MODEL_NAME}" in log
    else:
        assert expected in log


def served_probability(folder: Path, body: dict[str, Any]) -> float:
    """What the untouched files score for `body`, computed in-process."""
    stored = stored_predictor(folder, folder.name)
    model = LoadedModel(stored.predictor, stored.version, stored.checksum)
    scored = score_batch(model, [CustomerData.model_validate(body)], get_settings())
    return float(scored.probability[0])


def test_a_restored_model_never_sees_answers_cached_for_tampered_files(
    tmp_path: Path,
    trained: TrainingOutcome,
    app_with: AppWith,
    redis: RedisServer,
    body: dict[str, Any],
) -> None:
    # The tampered copy keeps its version but carries a rewritten manifest, so it is served:
    # an edit the checksums cannot see must still not share the restored files' cache.
    tampered_folder = copy_home(trained, tmp_path / "tampered", change_base_score)
    write_manifest(tampered_folder, tampered_folder.name)
    original_folder = copy_home(trained, tmp_path / "original")
    settings = deployed_settings(None, redis.url)
    tampered = app_with(home=tmp_path / "tampered", **settings)
    first, second = (tampered.post("/predict", json=body, headers=AUTH) for _ in range(2))
    original = app_with(home=tmp_path / "original", **settings)
    restored = original.post("/predict", json=body, headers=AUTH)
    assert [first.headers["x-cache"], second.headers["x-cache"]] == ["miss", "hit"]
    assert restored.status_code == 200 and restored.headers["x-cache"] == "miss"
    assert restored.json()["model_version"] == first.json()["model_version"]
    right = served_probability(original_folder, body)
    assert restored.json()["churn_probability"] == pytest.approx(right, abs=1e-9)
    assert abs(first.json()["churn_probability"] - right) > 0.01  # the tampering mattered

    keys = redis_client.Redis.from_url(redis.url).keys("churn:pred:*")
    checksums = [verify_manifest(f, f.name)[:32] for f in (tampered_folder, original_folder)]
    # churn:pred:{version}:{content checksum}:{request digest}, one entry per content.
    assert sorted(key.decode().split(":")[3] for key in keys) == sorted(checksums)
    assert checksums[0] != checksums[1]


def test_training_stores_a_checksum_of_every_file(trained: TrainingOutcome) -> None:
    folder = model_folder(trained)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["version"] == folder.name
    assert set(manifest["files"]) == {
        BOOSTER_FILE,
        PIPELINE_FILE,
        METADATA_FILE,
        REFERENCE_FILE,
        REFERENCE_INPUTS_FILE,
        REFERENCE_PREDICTIONS_FILE,
        GOLDEN_FILE,
    }
    stored = stored_predictor(folder, folder.name)
    assert stored.checksum == verify_manifest(folder, folder.name)
