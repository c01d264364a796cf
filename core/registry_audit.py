"""The registry's audit trail: one JSON model-version tag per change.

Why version tags: they live in the registry's own database, written in the same store as
the aliases, so every replica reads one history without an artifact-store round trip, and
a version's tags carry the story of that version. Registered-model tags would do too, but
the serving workers poll the registered model every few seconds and it would grow with
every change; version tags are read only by `ModelRegistry.audit_trail`. A tag value holds
up to 100,000 characters in MLflow 3, far above one entry.

The key is ``audit.<nanoseconds since the epoch>``, so entries sort by time across
versions; the value names the action, the version, who (a person or a job), why, the
figures behind the decision, the version it replaced and the aliases after the change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

AUDIT_PREFIX = "audit."
Figures = Mapping[str, Any]
"""JSON-serialisable figures behind a change (metrics, test statistics, counts)."""


@dataclass(frozen=True)
class AuditEntry:
    """One recorded registry change."""

    at: datetime
    action: str
    """register, set_champion, set_challenger, clear_challenger or rollback."""
    version: str
    actor: str
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)
    replaced: str | None = None
    """The champion this change displaced (set_champion, rollback)."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Alias → version right after the change."""


def require_who_and_why(actor: str, reason: str) -> None:
    """Checked before a change is made: a change nobody can account for is not made."""
    if not actor.strip() or not reason.strip():
        raise ValueError("a registry change needs an actor and a reason")


def audit_tag(
    version: str,
    action: str,
    actor: str,
    reason: str,
    figures: Figures | None,
    aliases: Mapping[str, str],
    replaced: str | None,
) -> tuple[str, str]:
    """The (key, value) of the model-version tag recording one change."""
    require_who_and_why(actor, reason)
    now = time.time_ns()
    entry = {
        "at": datetime.fromtimestamp(now / 1e9, UTC).isoformat(),
        "action": action,
        "version": version,
        "actor": actor,
        "reason": reason,
        "figures": dict(figures or {}),
        "replaced": replaced,
        "aliases": dict(aliases),
    }
    return f"{AUDIT_PREFIX}{now:020d}", json.dumps(entry, sort_keys=True, allow_nan=False)


def audit_entries(tag_sets: Iterable[Mapping[str, str]]) -> list[AuditEntry]:
    """Every audit entry among the versions' tags, newest first."""
    keyed = [
        (key, json.loads(value))
        for tags in tag_sets
        for key, value in tags.items()
        if key.startswith(AUDIT_PREFIX)
    ]
    keyed.sort(key=lambda item: item[0], reverse=True)
    return [
        AuditEntry(
            at=datetime.fromisoformat(entry["at"]),
            action=entry["action"],
            version=entry["version"],
            actor=entry["actor"],
            reason=entry["reason"],
            figures=entry["figures"],
            replaced=entry["replaced"],
            aliases=entry["aliases"],
        )
        for _, entry in keyed
    ]


def audit_trail(client: MlflowClient, name: str) -> list[AuditEntry]:
    """The audit entries of every version of registered model `name`, newest first."""
    tag_sets: list[Mapping[str, str]] = []
    token: str | None = None
    while True:
        page = client.search_model_versions(f"name = '{name}'", page_token=token)
        tag_sets += [version.tags for version in page]
        token = page.token
        if not token:
            return audit_entries(tag_sets)
