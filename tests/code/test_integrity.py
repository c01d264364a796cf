"""Model-file checksums (core/pipeline/integrity.py) and the caller-safe load reason
(serving/model_loading.py), on plain folders: every rule a stored model can break."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import xgboost as xgb
import yaml

from core.pipeline.integrity import (
    MANIFEST_FILE,
    ModelIntegrityError,
    content_checksum,
    verify_manifest,
    write_manifest,
)
from serving.model_loading import public_reason

VERSION = "abc123"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A model-like folder with a manifest; model.yaml is BentoML's and not covered."""
    model = tmp_path / "churn_model" / VERSION
    model.mkdir(parents=True)
    (model / "model.json").write_text('{"learner": {"base_score": "5E-1"}}')
    (model / "pipeline.json").write_text('{"threshold": 0.25}')
    (model / "model.yaml").write_text("name: churn_model\n")
    write_manifest(model, VERSION)
    return model


def refusal(folder: Path, version: str = VERSION, key: bytes | None = None) -> str:
    with pytest.raises(ModelIntegrityError) as raised:
        verify_manifest(folder, version, key)
    return str(raised.value)


def test_untouched_files_verify_and_give_the_content_checksum(folder: Path) -> None:
    checksum = verify_manifest(folder, VERSION)
    listed = json.loads((folder / MANIFEST_FILE).read_text())["files"]
    assert sorted(listed) == ["model.json", "pipeline.json"]
    assert checksum == content_checksum(VERSION, listed) and len(checksum) == 64


def test_model_yaml_is_not_covered(folder: Path) -> None:
    (folder / "model.yaml").write_text("name: churn_model\nlabels: {owner: x}\n")
    verify_manifest(folder, VERSION)


def test_a_changed_byte_is_a_checksum_mismatch_naming_the_file(folder: Path) -> None:
    (folder / "pipeline.json").write_text('{"threshold": NaN}')
    reason = refusal(folder)
    assert reason == "pipeline.json: checksum mismatch (changed since training)"
    assert str(folder) not in reason


def test_missing_and_unexpected_files_are_named(folder: Path) -> None:
    (folder / "model.json").unlink()
    (folder / "notes.txt").write_text("hello")
    reason = refusal(folder)
    assert "model.json: missing (listed in checksums.json)" in reason
    assert "notes.txt: unexpected file (not in checksums.json)" in reason


def test_a_manifest_of_another_version_is_refused(folder: Path) -> None:
    assert "written for version 'abc123', not 'other'" in refusal(folder, "other")


def test_a_model_without_manifest_is_refused(folder: Path) -> None:
    (folder / MANIFEST_FILE).unlink()
    assert refusal(folder).startswith("checksums.json: missing")


@pytest.mark.parametrize("text", ["{not json", '{"files": []}', "[]", '{"algorithm": "md5"}'])
def test_a_broken_manifest_is_refused(folder: Path, text: str) -> None:
    (folder / MANIFEST_FILE).write_text(text)
    assert refusal(folder).startswith("checksums.json: not ")


def test_the_checksum_follows_the_content(folder: Path) -> None:
    before = verify_manifest(folder, VERSION)
    (folder / "pipeline.json").write_text('{"threshold": 0.3}')
    assert write_manifest(folder, VERSION) != before
    (folder / "pipeline.json").write_text('{"threshold": 0.25}')
    assert write_manifest(folder, VERSION) == before  # same bytes, same checksum
    assert (
        content_checksum("another", json.loads((folder / MANIFEST_FILE).read_text())["files"])
        != before
    )


def test_a_signed_manifest_needs_the_same_key(folder: Path) -> None:
    write_manifest(folder, VERSION, b"key-one")
    verify_manifest(folder, VERSION, b"key-one")
    verify_manifest(folder, VERSION)  # no key configured: the checksums still apply
    assert "signature mismatch" in refusal(folder, key=b"key-two")
    # Rewriting the manifest without the key drops or breaks the signature.
    write_manifest(folder, VERSION)
    assert "not signed" in refusal(folder, key=b"key-one")


def test_xgboost_errors_lose_their_stack_trace_and_paths(tmp_path: Path) -> None:
    broken = tmp_path / "deep" / "model.json"
    broken.parent.mkdir()
    broken.write_text('{"learner": 12')
    with pytest.raises(xgb.core.XGBoostError) as raised:
        xgb.Booster().load_model(broken)
    assert "Stack trace" in str(raised.value)  # what XGBoost itself says
    reason = public_reason(raised.value)
    assert reason.startswith("XGBoostError: ")
    assert "Stack trace" not in reason and "[bt]" not in reason and "\n" not in reason
    assert "/" not in reason.replace('"', "")  # no /src/..., no /.venv/..., no tmp path


def test_paths_are_cut_to_file_names_and_groups_list_their_parts(tmp_path: Path) -> None:
    where = tmp_path / "models" / "churn_model" / "v1" / "model.yaml"
    exc = FileNotFoundError(f"[Errno 2] No such file or directory: '{where}'")
    assert public_reason(exc) == (
        "FileNotFoundError: [Errno 2] No such file or directory: 'model.yaml'"
    )
    with pytest.raises(yaml.YAMLError) as raised:
        yaml.safe_load("version: [abc\nmodule: x")
    assert "\n" not in public_reason(raised.value)
    group = ExceptionGroup("While structuring ModelInfo", [KeyError("context")])
    assert public_reason(group) == (
        "ExceptionGroup: While structuring ModelInfo (1 sub-exception): KeyError: 'context'"
    )
