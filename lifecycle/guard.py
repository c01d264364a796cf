"""Automatic rollback (`churn guard`): a champion whose live figures break a bar steps down.

Reads the champion's latest live performance (`performance_results`, written by `churn
performance`) and, when a claimed figure (enough labels: the run stores None otherwise) is
past its bar in ``CHURN_PERFORMANCE_BARS`` (a floor; a ceiling for brier and ece), rolls
back to previous_champion, recording the figures. Only a measurement taken after the
champion took the role counts (the audit trail's latest set_champion or rollback to it):
an older one judged a different reign. So one measurement never rolls back twice — after
the first rollback the champion has changed and that measurement predates its return.

The error-rate rule (too many of a champion's answers failing) lives in the service.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from core.registry import Assignment, ModelRegistry
from core.settings import get_settings
from monitoring.degradation import Degradation, find_degradations
from monitoring.latest_results import read_latest_results
from monitoring.measure import METRICS

TAKES_ROLE = ("set_champion", "rollback")
"""Audit actions after which a version is the champion."""


@dataclass(frozen=True)
class GuardOutcome:
    """What the guard checked, and whether it rolled back."""

    rolled_back: bool
    message: str
    assignment: Assignment
    """The roles after the check."""
    champion: str | None = None
    """The champion checked (registered version)."""
    champion_since: datetime | None = None
    measured_at: datetime | None = None
    measured: dict[str, float | None] = field(default_factory=dict)
    label_count: int = 0
    bars: dict[str, float] = field(default_factory=dict)
    breaches: tuple[Degradation, ...] = ()


def champion_since(registry: ModelRegistry, version: str) -> datetime | None:
    """When `version` last became champion (None: the trail does not say)."""
    for entry in registry.audit_trail():  # newest first
        if entry.version == version and entry.action in TAKES_ROLE:
            return entry.at
    return None


def _check_bars(bars: dict[str, float]) -> None:
    unknown = sorted(set(bars) - set(METRICS))
    if unknown:
        raise ValueError(
            f"CHURN_PERFORMANCE_BARS: unknown metric(s) {unknown}; known: {list(METRICS)}"
        )


def _breach_reason(breaches: tuple[Degradation, ...], version: str) -> str:
    parts = [f"{b.metric} {b.measured:.4f} past its bar {b.limit:g}" for b in breaches]
    return f"guard: champion {version} live {', '.join(parts)}"


def guard(
    engine: Engine,
    registry: ModelRegistry,
    now: datetime,
    actor: str,
    bars: dict[str, float] | None = None,
) -> GuardOutcome:
    """Check the champion's latest live figures against the bars (settings by default) and
    roll back on a breach; `now` bounds which measurements exist (none after it)."""
    bars = dict(get_settings().performance_bars if bars is None else bars)
    _check_bars(bars)
    before = registry.assignment()
    if not bars:
        return GuardOutcome(
            False, "no bar configured (CHURN_PERFORMANCE_BARS): nothing to check", before
        )
    if before.champion is None or before.champion_tag is None:
        return GuardOutcome(False, "no champion: nothing to check", before)
    champion = before.champion
    if before.previous_champion is None:
        return GuardOutcome(
            False,
            f"champion {champion} has no previous champion to roll back to: nothing to do",
            before,
            champion,
            bars=bars,
        )
    since = champion_since(registry, champion)
    results = read_latest_results(engine, before.champion_tag.split(":", 1)[1])
    measured_at = results.last_run.get("performance")
    base: dict[str, Any] = {"champion": champion, "champion_since": since, "bars": bars}
    if measured_at is None or measured_at > now or (since is not None and measured_at <= since):
        when = f" since it became champion at {since:%Y-%m-%d %H:%M} UTC" if since else ""
        return GuardOutcome(
            False,
            f"no performance run of champion {champion}{when}: nothing to judge",
            before,
            **base,
        )
    measured = {f.metric: f.measured for f in results.performance if f.metric in METRICS}
    label_count = max((f.label_count for f in results.performance), default=0)
    breaches = tuple(find_degradations(measured, None, max_drop=0.0, drop_metrics=(), bars=bars))
    base.update(measured_at=measured_at, measured=measured, label_count=label_count)
    if not breaches:
        claimed = [m for m in bars if measured.get(m) is not None]
        said = (
            f"within its bars ({', '.join(claimed)})"
            if claimed
            else "no barred figure claimed (too few labels)"
        )
        return GuardOutcome(False, f"champion {champion}: {said}", before, **base)
    figures = {
        "measured": measured,
        "label_count": label_count,
        "measured_at": measured_at.isoformat(),
        "bars": bars,
        "breaches": [asdict(b) for b in breaches],
    }
    after = registry.rollback(actor, _breach_reason(breaches, champion), figures)
    message = f"rolled back: champion {after.champion} again, {champion} stepped down"
    return GuardOutcome(True, message, after, breaches=breaches, **base)
