"""API-key authentication: loading the keys, checking a presented key, naming it safely.

A key is a secret: it is compared in constant time and never logged; logs and rate limits
use :func:`key_id`, a short fingerprint of it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

AuthResult = Literal["ok", "missing", "wrong", "disabled"]

API_KEY_HEADER = b"x-api-key"
_BEARER = b"bearer "
_PATH_STARTS = ("/", "./", "../", "~/")


def load_api_keys(setting: str | None) -> tuple[bytes, ...]:
    """Keys from ``CHURN_API_KEYS``: comma-separated, the path of a file of keys, or (from
    ``CHURN_API_KEYS_FILE``) that file's content.

    In a file: one key per line, blank lines and ``#`` comment lines ignored. An empty
    result means authentication is disabled. A value starting like a path (``/``, ``./``,
    ``../``, ``~/``) that is not a file is a ValueError rather than a key.
    """
    if setting is None or not setting.strip():
        return ()
    text = setting.strip()
    path = Path(text).expanduser()
    if "\n" in text:  # a file's content (CHURN_API_KEYS_FILE): one key per line
        candidates = [line for line in text.splitlines() if not line.strip().startswith("#")]
    elif "," not in text and path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        candidates = [line for line in lines if not line.strip().startswith("#")]
    elif text.startswith(_PATH_STARTS):
        # A mistyped path must not silently become the one valid key.
        raise ValueError(f"CHURN_API_KEYS looks like a path but {text!r} is not a file")
    else:
        candidates = text.split(",")
    return tuple(key.strip().encode() for key in candidates if key.strip())


def check_api_key(presented: str | bytes | None, keys: tuple[bytes, ...]) -> AuthResult:
    """Compare against every key in constant time (no early exit, no length leak)."""
    if not keys:
        return "disabled"
    if not presented:
        return "missing"
    raw = presented.encode("utf-8", "surrogateescape") if isinstance(presented, str) else presented
    # Equal-length digests: compare_digest leaks a length mismatch, and this hides it.
    digest = hashlib.sha256(raw).digest()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(digest, hashlib.sha256(key).digest())
    return "ok" if matched else "wrong"


def key_id(presented: str | bytes) -> str:
    """A 16-hex-digit sha256 fingerprint: the client id for rate limits and logs."""
    raw = presented.encode("utf-8", "surrogateescape") if isinstance(presented, str) else presented
    return hashlib.sha256(raw).hexdigest()[:16]


def api_key_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key from ASGI headers: ``X-API-Key``, else ``Authorization: Bearer``."""
    bearer = None
    for name, value in headers:
        name = name.lower()
        if name == API_KEY_HEADER:
            return value.strip() or None
        if name == b"authorization" and value[: len(_BEARER)].lower() == _BEARER:
            bearer = value[len(_BEARER) :].strip() or None
    return bearer
