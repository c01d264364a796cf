"""How a registered version's files reach a replica's BentoML store, verified.

The files are downloaded from the registry's artifact store into scratch space, checked
against their checksums and against the content checksum recorded at registration, and only
then imported into the store: a corrupt or substituted copy never enters it. A copy already
in the store is checked the same way before it is used.
"""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.pipeline.integrity import ModelIntegrityError, verify_manifest
from core.pipeline.store import configured_signing_key

if TYPE_CHECKING:
    from mlflow import MlflowClient


def fetch_files(
    client: MlflowClient,
    run_id: str,
    artifact_path: str,
    tag: str,
    expected: str,
    store: Any = None,
) -> Path:
    """The verified folder of BentoML model `tag` in `store` (the process's when None),
    imported from run `run_id`'s `artifact_path` when missing; `expected` is the content
    checksum recorded at registration. Raises `ModelIntegrityError` naming the problem."""
    import bentoml
    from bentoml.exceptions import NotFound

    stores = {} if store is None else {"_model_store": store}
    bento_version = tag.split(":", 1)[1]
    with _fetch_lock(tag):  # the workers of a replica share its store
        try:
            folder = Path(bentoml.models.get(tag, **stores).path)
        except NotFound:
            with tempfile.TemporaryDirectory(prefix="churn-fetch-") as scratch:
                downloaded = Path(client.download_artifacts(run_id, artifact_path, scratch))
                check_files(downloaded, bento_version, expected)
                imported = bentoml.models.import_model(str(downloaded), "folder", **stores)
            folder = Path(imported.path)
    check_files(folder, bento_version, expected)  # a local copy edited since
    return folder


def check_files(folder: Path, bento_version: str, expected: str) -> None:
    """The folder's files match its manifest, and the manifest is the one registered."""
    checksum = verify_manifest(folder, bento_version, configured_signing_key())
    if checksum != expected:
        raise ModelIntegrityError(
            f"content checksum {checksum[:12]}… is not the {expected[:12]}… registered "
            "(files and manifest rewritten together)"
        )


@contextmanager
def _fetch_lock(tag: str) -> Iterator[None]:
    """One fetch of a model at a time on this host: a second worker waits, then finds the
    complete copy instead of a half-imported folder (or a clash in the store)."""
    path = Path(tempfile.gettempdir()) / f"churn-fetch-{tag.replace(':', '-')}.lock"
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
