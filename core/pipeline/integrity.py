"""Checksums of a stored model's files: written at training, verified before every load.

A stored model folder holds ``checksums.json``: the model version and the SHA-256 of every
file in the folder except BentoML's own ``model.yaml`` (BentoML writes it after our files
and it holds nothing the predictor reads; the version it reports is bound to the manifest's
instead) and the manifest itself. A model whose files do not match — changed, missing or
unexpected, or a manifest written for another version — is refused, so an edited booster or
threshold is never served as healthy.

This detects accidental and naive edits. Whoever can rewrite the files can rewrite the
manifest too, unless it is signed: with ``CHURN_MODEL_SIGNING_KEY`` set, training adds an
HMAC-SHA256 of the manifest and loading refuses a model whose signature is absent or wrong.

The *content checksum* (a SHA-256 of the verified manifest) identifies exactly what is
served; the prediction cache is keyed by it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

MANIFEST_FILE = "checksums.json"
BENTOML_INFO_FILE = "model.yaml"
"""BentoML's own record of the model; written by BentoML, not covered (see above)."""
NOT_COVERED = frozenset({MANIFEST_FILE, BENTOML_INFO_FILE})
ALGORITHM = "sha256"
MAX_LISTED_PROBLEMS = 5


class ModelIntegrityError(ValueError):
    """A stored model's files do not match its manifest: the message names each file
    (relative to the model folder) and the rule it broke."""


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (a booster can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def covered_files(folder: Path) -> dict[str, Path]:
    """Every file of the model folder the manifest covers, by its relative POSIX name."""
    return {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() not in NOT_COVERED
    }


def _body(version: str, files: dict[str, str]) -> dict[str, Any]:
    return {"algorithm": ALGORITHM, "version": version, "files": dict(sorted(files.items()))}


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def content_checksum(version: str, files: dict[str, str]) -> str:
    """SHA-256 of the canonical manifest: changes with any file's bytes or the version."""
    return hashlib.sha256(_canonical(_body(version, files))).hexdigest()


def _signature(body: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


def write_manifest(folder: Path, version: str, signing_key: bytes | None = None) -> str:
    """Write ``checksums.json`` for the files now in `folder`; returns the content checksum."""
    files = {name: file_digest(path) for name, path in covered_files(folder).items()}
    body = _body(version, files)
    manifest = {**body, **({"hmac_sha256": _signature(body, signing_key)} if signing_key else {})}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return content_checksum(version, files)


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ModelIntegrityError(
            f"{MANIFEST_FILE}: missing (the model was saved without checksums; "
            "retrain it with `churn train`)"
        )
    try:
        manifest = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ModelIntegrityError(f"{MANIFEST_FILE}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ModelIntegrityError(f"{MANIFEST_FILE}: not valid JSON ({exc.msg})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (
        not isinstance(files, dict)
        or manifest.get("algorithm") != ALGORITHM
        or not isinstance(manifest.get("version"), str)
        or not all(isinstance(v, str) for v in files.values())
    ):
        raise ModelIntegrityError(
            f"{MANIFEST_FILE}: not a manifest (needs algorithm '{ALGORITHM}', a version "
            "and a file → digest map)"
        )
    return manifest


def _file_problems(folder: Path, listed: dict[str, str]) -> list[str]:
    present = covered_files(folder)
    problems = [
        f"{name}: checksum mismatch (changed since training)"
        for name in sorted(listed.keys() & present.keys())
        if not hmac.compare_digest(file_digest(present[name]), listed[name])
    ]
    problems += [
        f"{name}: missing (listed in {MANIFEST_FILE})"
        for name in sorted(listed.keys() - present.keys())
    ]
    problems += [
        f"{name}: unexpected file (not in {MANIFEST_FILE})"
        for name in sorted(present.keys() - listed.keys())
    ]
    return problems


def verify_manifest(folder: Path, version: str, signing_key: bytes | None = None) -> str:
    """Check every file of the model folder against ``checksums.json`` (and its signature
    when a key is configured); returns the content checksum, or raises
    `ModelIntegrityError` naming each offending file and the rule."""
    manifest = _read_manifest(folder)
    body = _body(manifest["version"], manifest["files"])
    if signing_key is not None:
        signature = manifest.get("hmac_sha256")
        if not isinstance(signature, str):
            raise ModelIntegrityError(
                f"{MANIFEST_FILE}: not signed, and CHURN_MODEL_SIGNING_KEY requires a signature"
            )
        if not hmac.compare_digest(signature, _signature(body, signing_key)):
            raise ModelIntegrityError(
                f"{MANIFEST_FILE}: signature mismatch (not signed with CHURN_MODEL_SIGNING_KEY)"
            )
    problems = []
    if manifest["version"] != version:
        problems.append(
            f"{MANIFEST_FILE}: written for version '{manifest['version']}', not '{version}'"
        )
    problems += _file_problems(folder, manifest["files"])
    if problems:
        shown = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(shown)
        raise ModelIntegrityError("; ".join(shown) + (f"; and {more} more" if more else ""))
    return content_checksum(version, manifest["files"])
