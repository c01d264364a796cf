"""API keys: loading from the setting or a file, checking, fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.auth import api_key_from_headers, check_api_key, key_id, load_api_keys

KEYS = (b"first-key-0123456789", b"second-key-abcdefghij")


def test_unset_or_blank_means_no_keys() -> None:
    assert load_api_keys(None) == ()
    assert load_api_keys("") == ()
    assert load_api_keys("  ,  ") == ()


def test_comma_separated_keys_are_stripped() -> None:
    assert load_api_keys(" a1 , b2,,c3 ") == (b"a1", b"b2", b"c3")
    assert load_api_keys("single") == (b"single",)


def test_key_file_skips_blank_lines_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("# team A\n  key-one  \n\n   # rotated 2024\nkey-two\n\t\n")
    assert load_api_keys(str(path)) == (b"key-one", b"key-two")
    assert load_api_keys(f"  {path}  ") == (b"key-one", b"key-two")


def test_a_missing_key_file_is_an_error_not_a_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a file"):
        load_api_keys(str(tmp_path / "no-such-file"))


def test_no_keys_means_disabled() -> None:
    assert check_api_key(None, ()) == "disabled"
    assert check_api_key("anything", ()) == "disabled"


def test_missing_wrong_and_ok() -> None:
    assert check_api_key(None, KEYS) == "missing"
    assert check_api_key("", KEYS) == "missing"
    assert check_api_key("first-key-012345678", KEYS) == "wrong"  # a prefix
    assert check_api_key("first-key-01234567890", KEYS) == "wrong"  # longer
    assert check_api_key("FIRST-KEY-0123456789", KEYS) == "wrong"
    assert check_api_key("first-key-0123456789", KEYS) == "ok"
    assert check_api_key("second-key-abcdefghij", KEYS) == "ok"
    assert check_api_key(b"second-key-abcdefghij", KEYS) == "ok"
    assert check_api_key("clé-non-ascii", KEYS) == "wrong"


def test_keys_from_a_file_authenticate(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("alpha\nbeta\n")
    keys = load_api_keys(str(path))
    assert check_api_key("beta", keys) == "ok"
    assert check_api_key("gamma", keys) == "wrong"


def test_key_id_is_a_short_stable_fingerprint() -> None:
    fingerprint = key_id("first-key-0123456789")
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert key_id(b"first-key-0123456789") == fingerprint
    assert key_id("second-key-abcdefghij") != fingerprint
    assert "first" not in fingerprint


def test_api_key_from_headers() -> None:
    assert api_key_from_headers([(b"X-API-Key", b" k1 ")]) == b"k1"
    assert api_key_from_headers([(b"authorization", b"Bearer k2")]) == b"k2"
    assert api_key_from_headers([(b"authorization", b"Basic abc")]) is None
    both = [(b"authorization", b"Bearer k2"), (b"x-api-key", b"k1")]
    assert api_key_from_headers(both) == b"k1"
    assert api_key_from_headers([(b"x-api-key", b"")]) is None
    assert api_key_from_headers([]) is None
