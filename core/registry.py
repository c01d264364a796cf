"""The model registry decides what serves: MLflow's registered model and its aliases.

Every worker of every replica reads one place, the MLflow registry (`MLFLOW_TRACKING_URI`):
registered model `CHURN_REGISTERED_MODEL` (default ``churn_model``), one version per
registered BentoML model, and three aliases — ``champion`` (serves), ``challenger`` (answers
a share of customers), ``previous_champion`` (the fallback a rollback restores). A freshly
trained model serves nothing until it is registered and given an alias.

A version's artifacts are the BentoML model folder itself (booster, pipeline, metadata,
references, ``checksums.json``, BentoML's ``model.yaml``), logged to a registration run,
so any replica can `fetch` the files into its own BentoML store; the checksums are verified
on the downloaded copy before it enters the store, and against the content checksum
recorded at registration, so a corrupt or substituted copy is refused.

Every change is recorded in the registry too (core/registry_audit.py), so all replicas see
one history; the files' way into a store is core/registry_files.py. Writers are expected to
be one at a time (the CLI, run by a person or a CronJob); two concurrent promotions could
interleave their alias moves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from core.pipeline.integrity import ModelIntegrityError, verify_manifest
from core.pipeline.store import METADATA_FILE, configured_signing_key
from core.registry_audit import (
    AuditEntry,
    Figures,
    audit_tag,
    audit_trail,
    require_who_and_why,
)
from core.registry_files import fetch_files
from core.settings import get_settings, mlflow_tracking_uri
from core.tracking import registration_experiment

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous_champion"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS_CHAMPION)

_ROLE_CHANGES = frozenset(
    {"register", "set_champion", "set_challenger", "clear_challenger", "rollback"}
)
"""Actions only the methods that make them may record: an entry must match the aliases."""

ARTIFACT_PATH = "bentoml_model"
"""Where a registration run keeps the BentoML model folder."""
BENTOML_TAG = "bentoml_tag"
CONTENT_CHECKSUM = "content_checksum"
CHALLENGER_SHARE = "challenger_share"
"""Registered-model tag: the challenger's share of customers while one is set."""


class RegistryError(RuntimeError):
    """A registry change that cannot be made as asked (no such version, nothing to roll
    back to, a version already in the role)."""


@dataclass(frozen=True)
class Assignment:
    """Which registered version plays which role, with its BentoML tag; None: no model in
    that role. The challenger is None when it is also the champion (mid-promotion)."""

    champion: str | None
    challenger: str | None
    previous_champion: str | None
    champion_tag: str | None
    challenger_tag: str | None
    previous_champion_tag: str | None
    challenger_share: float
    """0 when there is no challenger."""


class ModelRegistry:
    """The registry of one registered model in one MLflow store."""

    def __init__(self, tracking_uri: str | None = None, name: str | None = None) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri or mlflow_tracking_uri()
        self.name = name or get_settings().registered_model
        self.client: MlflowClient = MlflowClient(self.tracking_uri, self.tracking_uri)
        self._tags: dict[str, str] = {}
        """Version → BentoML tag; a version's tag never changes, so it is read once."""

    # Registration and fetching.

    def register(
        self,
        tag: str,
        actor: str,
        reason: str,
        figures: Figures | None = None,
        store: Any = None,
    ) -> str:
        """Register a model of a BentoML store (the process's by default) as a new version,
        its files logged as the version's artifacts; returns the version. A tag already
        registered returns its existing version."""
        import bentoml
        from mlflow.exceptions import MlflowException

        require_who_and_why(actor, reason)
        model = bentoml.models.get(tag, **({} if store is None else {"_model_store": store}))
        tag = str(model.tag)
        folder = Path(model.path)
        checksum = verify_manifest(folder, str(model.tag.version), configured_signing_key())
        existing = self.client.search_model_versions(
            f"name = '{self.name}' and tags.{BENTOML_TAG} = '{tag}'"
        )
        if existing:
            return str(existing[0].version)
        try:
            self.client.create_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        metadata = yaml.safe_load((folder / METADATA_FILE).read_text()) or {}
        run = self.client.create_run(
            registration_experiment(self.client, self.tracking_uri),
            run_name=f"register {tag}",
            tags={BENTOML_TAG: tag, "training_run_id": str(metadata.get("mlflow_run_id"))},
        )
        self.client.log_artifacts(run.info.run_id, str(folder), ARTIFACT_PATH)
        self.client.set_terminated(run.info.run_id)
        figures = dict(figures or {})
        version = self.client.create_model_version(
            self.name,
            f"{run.info.artifact_uri}/{ARTIFACT_PATH}",
            run_id=run.info.run_id,
            tags={
                BENTOML_TAG: tag,
                CONTENT_CHECKSUM: checksum,
                "metrics": json.dumps(metadata.get("metrics", {}), sort_keys=True),
            },
            description=reason,
        ).version
        self._record(str(version), "register", actor, reason, figures)
        return str(version)

    def bentoml_tag(self, version: str) -> str:
        """The BentoML tag a registered version holds."""
        if version not in self._tags:
            self._tags[version] = self.client.get_model_version(self.name, version).tags[
                BENTOML_TAG
            ]
        return self._tags[version]

    def training_figures(self, version: str) -> dict[str, float]:
        """The training metrics recorded with `version` at registration."""
        tags = self.client.get_model_version(self.name, version).tags
        figures: dict[str, float] = json.loads(tags.get("metrics", "{}"))
        return figures

    def fetch(self, version: str, store: Any = None) -> Path:
        """The verified folder of `version` in a BentoML model store (the process's by
        default; else a store object as `bentoml.models` functions take it), imported from
        the registry's artifacts when missing. Raises `ModelIntegrityError` for a copy whose
        files do not match its checksums or the checksum recorded at registration: such a
        copy never enters the store."""
        details = self.client.get_model_version(self.name, version)
        if details.run_id is None:
            raise RegistryError(f"version {version} has no registration run (not ours)")
        tag, expected = details.tags[BENTOML_TAG], details.tags[CONTENT_CHECKSUM]
        try:
            return fetch_files(self.client, details.run_id, ARTIFACT_PATH, tag, expected, store)
        except ModelIntegrityError as exc:
            raise ModelIntegrityError(f"version {version}: {exc}") from None

    # Roles.

    def assignment(self) -> Assignment:
        """The current roles: one registry read (plus one per version never seen before),
        cheap enough to poll every few seconds (≈ 3 ms on a local SQLite store)."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return Assignment(None, None, None, None, None, None, 0.0)
        aliases: Mapping[str, str] = {k: str(v) for k, v in model.aliases.items()}
        champion, previous = aliases.get(CHAMPION), aliases.get(PREVIOUS_CHAMPION)
        challenger = aliases.get(CHALLENGER)
        challenger = None if challenger == champion else challenger
        share = float(model.tags.get(CHALLENGER_SHARE, 0.0)) if challenger else 0.0
        return Assignment(
            champion,
            challenger,
            previous,
            self.bentoml_tag(champion) if champion else None,
            self.bentoml_tag(challenger) if challenger else None,
            self.bentoml_tag(previous) if previous else None,
            share,
        )

    def set_champion(
        self, version: str, actor: str, reason: str, figures: Figures | None = None
    ) -> Assignment:
        """Make `version` the champion; the old champion becomes previous_champion, and a
        challenger promoted this way stops being the challenger."""
        require_who_and_why(actor, reason)
        self._require(version)
        before = self.assignment()
        if before.champion == version:
            raise RegistryError(f"version {version} is already the champion")
        self.client.set_registered_model_alias(self.name, CHAMPION, version)
        if before.champion is not None:
            self.client.set_registered_model_alias(self.name, PREVIOUS_CHAMPION, before.champion)
        if before.challenger == version:
            self._drop_challenger()
        self._record(version, "set_champion", actor, reason, figures, before.champion)
        return self.assignment()

    def set_challenger(
        self,
        version: str,
        actor: str,
        reason: str,
        figures: Figures | None = None,
        share: float | None = None,
    ) -> Assignment:
        """Give `version` a share of customers (default `CHURN_CHALLENGER_SHARE`)."""
        require_who_and_why(actor, reason)
        self._require(version)
        share = get_settings().challenger_share if share is None else share
        if not 0 <= share <= 1:
            raise ValueError(f"challenger share must be within [0, 1], not {share}")
        if self.assignment().champion == version:
            raise RegistryError(f"version {version} is the champion")
        self.client.set_registered_model_tag(self.name, CHALLENGER_SHARE, repr(float(share)))
        self.client.set_registered_model_alias(self.name, CHALLENGER, version)
        self._record(version, "set_challenger", actor, reason, {**(figures or {}), "share": share})
        return self.assignment()

    def clear_challenger(
        self, actor: str, reason: str, figures: Figures | None = None
    ) -> Assignment:
        """Stop the challenger (e.g. not promoted): every customer goes to the champion."""
        require_who_and_why(actor, reason)
        challenger = self.assignment().challenger
        if challenger is None:
            raise RegistryError("there is no challenger")
        self._drop_challenger()
        self._record(challenger, "clear_challenger", actor, reason, figures)
        return self.assignment()

    def rollback(self, actor: str, reason: str, figures: Figures | None = None) -> Assignment:
        """previous_champion serves again. The rolled-back champion is no fallback (it is
        why we roll back), so previous_champion is left unset; the audit entry names it."""
        require_who_and_why(actor, reason)
        before = self.assignment()
        if before.previous_champion is None:
            raise RegistryError("there is no previous champion to roll back to")
        self.client.set_registered_model_alias(self.name, CHAMPION, before.previous_champion)
        self.client.delete_registered_model_alias(self.name, PREVIOUS_CHAMPION)
        self._record(before.previous_champion, "rollback", actor, reason, figures, before.champion)
        return self.assignment()

    def record(
        self, version: str, action: str, actor: str, reason: str, figures: Figures | None = None
    ) -> None:
        """Record an event that changes no role (a model refused by a worker, a promotion
        test short of labels), so the audit trail shows it and on which figures."""
        require_who_and_why(actor, reason)
        if action in _ROLE_CHANGES:
            raise ValueError(f"action {action!r} changes roles: use its own method")
        self._require(version)
        self._record(version, action, actor, reason, figures)

    def audit_trail(self) -> list[AuditEntry]:
        """Every recorded change, newest first."""
        return audit_trail(self.client, self.name)

    # Internals.

    def _require(self, version: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.bentoml_tag(version)
        except MlflowException as exc:
            raise RegistryError(f"{self.name} has no version {version}") from exc

    def _drop_challenger(self) -> None:
        self.client.delete_registered_model_alias(self.name, CHALLENGER)
        self.client.delete_registered_model_tag(self.name, CHALLENGER_SHARE)

    def _record(
        self,
        version: str,
        action: str,
        actor: str,
        reason: str,
        figures: Figures | None,
        replaced: str | None = None,
    ) -> None:
        aliases = {
            k: str(v) for k, v in self.client.get_registered_model(self.name).aliases.items()
        }
        key, value = audit_tag(version, action, actor, reason, figures, aliases, replaced)
        self.client.set_model_version_tag(self.name, version, key, value)
