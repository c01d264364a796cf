"""Secrets and settings from files (``NAME_FILE``), as container platforms mount them."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings, mlflow_tracking_uri
from serving.auth import load_api_keys


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_file_variable_sets_the_setting_to_the_files_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_ID_HASH_SECRET_FILE", write(tmp_path / "id", "s3cret\n"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL_FILE", write(tmp_path / "db", "postgresql://u:pw@db/churn"))
    monkeypatch.delenv("CHURN_WORKERS")  # the test session sets it
    monkeypatch.setenv("CHURN_WORKERS_FILE", write(tmp_path / "w", "3\n"))
    settings = Settings()
    assert settings.id_hash_secret is not None
    assert settings.id_hash_secret.get_secret_value() == "s3cret"  # the newline dropped
    assert settings.database_url == "postgresql://u:pw@db/churn"
    assert settings.workers == 3


def test_api_keys_from_a_file_variable_are_its_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHURN_API_KEYS", raising=False)
    keys = write(tmp_path / "keys", "# ops team\nkey-one\n\nkey-two\n")
    monkeypatch.setenv("CHURN_API_KEYS_FILE", keys)
    assert load_api_keys(Settings().api_keys) == (b"key-one", b"key-two")


def test_a_setting_given_twice_or_an_unreadable_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_ID_HASH_SECRET", "inline")
    monkeypatch.setenv("CHURN_ID_HASH_SECRET_FILE", write(tmp_path / "id", "from-file"))
    with pytest.raises(ValueError, match="both CHURN_ID_HASH_SECRET and CHURN_ID_HASH_SECRET_FILE"):
        Settings()
    monkeypatch.delenv("CHURN_ID_HASH_SECRET")
    monkeypatch.setenv("CHURN_ID_HASH_SECRET_FILE", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="CHURN_ID_HASH_SECRET_FILE: cannot read"):
        Settings()


def test_mlflow_tracking_uri_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = "postgresql://mlflow:pw@db/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI_FILE", write(tmp_path / "uri", uri + "\n"))
    assert mlflow_tracking_uri() == uri
