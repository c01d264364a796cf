"""Customer-id hashing and the key it uses."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.settings import Settings
from monitoring.identity import KEY_FILE_NAME, customer_hash, load_id_secret, load_or_create_key


def test_hash_is_keyed_hex_and_stable() -> None:
    first = customer_hash("CUST-1", b"a" * 32)
    assert first == customer_hash("CUST-1", b"a" * 32)
    assert len(first) == 64 and int(first, 16) >= 0
    assert first != customer_hash("CUST-1", b"b" * 32)
    assert first != customer_hash("CUST-2", b"a" * 32)


def test_configured_secret_wins(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, id_hash_secret="s" * 40)  # type: ignore[arg-type]
    assert load_id_secret(settings) == b"s" * 40
    assert not (tmp_path / KEY_FILE_NAME).exists()


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", id_hash_secret=None)
    key = load_id_secret(settings)
    path = tmp_path / "data" / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 64
    assert load_id_secret(settings) == key
    # Copying the file's content into CHURN_ID_HASH_SECRET gives the same hashes.
    copied = Settings(data_dir=tmp_path / "other", id_hash_secret=path.read_text())  # type: ignore[arg-type]
    assert customer_hash("C", load_id_secret(copied)) == customer_hash("C", key)


def test_racing_workers_all_get_the_winners_key(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    with ThreadPoolExecutor(max_workers=16) as pool:
        keys = list(pool.map(lambda _: load_or_create_key(path), range(64)))
    assert len(set(keys)) == 1
    assert keys[0] == path.read_bytes().strip()
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE_NAME]  # no temp files left


def test_a_truncated_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE_NAME).write_text("short\n")
    with pytest.raises(ValueError, match="shorter"):
        load_or_create_key(tmp_path / KEY_FILE_NAME)
