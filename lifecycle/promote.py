"""Promotion (`churn promote`): the paired test on the experiment's evidence, then the move.

The registry says who plays which role; the prediction log holds both models' scores of the
same customers (lifecycle/experiment.py); `lifecycle.promotion.promotion_decision` gives
the verdict on them, each model at its own decision threshold (its stored pipeline's). Then:

- promoted → the challenger becomes champion, the old champion previous_champion;
- refused because the challenger is worse (``not_non_inferior``, ``auc_worse``) → the
  challenger is cleared: every customer goes back to the champion;
- too few churners yet, or too few customers known to have stayed (a stayer is known only
  once the horizon has closed, lifecycle/experiment.py; the same minimum applies) → no role
  changes, but the decision is recorded all the same (action ``promotion_deferred``), so
  the trail shows the test ran and on what.

Every move carries the decision's figures and the experiment's counts in the audit trail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from core.pipeline.store import PIPELINE_FILE
from core.registry import Assignment, ModelRegistry
from core.settings import get_settings
from lifecycle.experiment import PairedOutcomes, paired_outcomes
from lifecycle.promotion import PromotionDecision, promotion_decision

PROMOTED, CLEARED, DEFERRED, NO_CHALLENGER = "promoted", "cleared", "deferred", "no_challenger"
DEFERRED_ACTION = "promotion_deferred"
"""The audit action of a test that could not decide yet (no role changed)."""


@dataclass(frozen=True)
class PromotionOutcome:
    """What the promotion test decided and what was done (nothing, with `dry_run`)."""

    action: str
    """``promoted``, ``cleared``, ``deferred`` or ``no_challenger``."""
    message: str
    assignment: Assignment
    """The roles after (before, with `dry_run`)."""
    decision: PromotionDecision | None = None
    outcomes: PairedOutcomes | None = None
    dry_run: bool = False

    def figures(self) -> dict[str, Any]:
        """The decision and the experiment's counts, JSON-ready: what the trail records."""
        decision = self.decision.to_dict() if self.decision else {}
        experiment = self.outcomes.to_dict() if self.outcomes else {}
        return {**decision, "experiment": experiment}


def bento_version(tag: str) -> str:
    """``churn_model:<version>`` → the version the prediction log writes."""
    return tag.split(":", 1)[1]


def decision_threshold(registry: ModelRegistry, version: str, store: Any = None) -> float:
    """A registered version's decision cut, from its stored pipeline (fetched, verified)."""
    folder = registry.fetch(version, store)
    return float(json.loads((folder / PIPELINE_FILE).read_text())["threshold"])


def _reason(decision: PromotionDecision, given: str | None, auto: bool) -> str:
    who = "automatic promotion test" if auto else "promotion test"
    stated = f"{who} ({decision.rule}): {'; '.join(decision.reasons)}"
    return f"{given.strip()} — {stated}" if given and given.strip() else stated


def _await_stayers(
    registry: ModelRegistry,
    before: Assignment,
    outcomes: PairedOutcomes,
    stayers: int,
    needed: int,
    actor: str,
    dry_run: bool,
) -> PromotionOutcome:
    """Churners are known early, stayers only once their horizon closes: a test on the
    churners alone cannot rank anyone, so it waits (recorded, like too few churners)."""
    message = (
        f"no decision yet: {stayers} customers known to have stayed (horizon closed), "
        f"{needed} needed (CHURN_PROMOTION_MIN_CHURNERS); {outcomes.counts['open']} still open"
    )
    outcome = PromotionOutcome(DEFERRED, message, before, None, outcomes, dry_run)
    if not dry_run:
        assert before.challenger is not None
        reason = f"promotion test (too_few_stayers): {message.removeprefix('no decision yet: ')}"
        figures = {**outcome.figures(), "rule": "too_few_stayers"}
        registry.record(before.challenger, DEFERRED_ACTION, actor, reason, figures)
    return outcome


def promote(
    engine: Engine,
    registry: ModelRegistry,
    now: datetime,
    actor: str,
    auto: bool = False,
    *,
    reason: str | None = None,
    dry_run: bool = False,
    store: Any = None,
) -> PromotionOutcome:
    """Run the promotion test on the current champion and challenger and act on it.

    `auto` marks a run by a job (cron) rather than by hand: it is said in the recorded
    reason and figures. `store`: the BentoML store the versions' files are fetched into
    (the process's by default), for their thresholds.
    """
    before = registry.assignment()
    if before.challenger is None or before.champion is None:
        missing = "challenger" if before.challenger is None else "champion"
        return PromotionOutcome(
            NO_CHALLENGER, f"refused: there is no {missing} to compare", before, dry_run=dry_run
        )
    assert before.champion_tag is not None and before.challenger_tag is not None
    outcomes = paired_outcomes(
        engine,
        bento_version(before.champion_tag),
        bento_version(before.challenger_tag),
        now,
        get_settings().performance_horizon_days,
    )
    thresholds = (
        decision_threshold(registry, before.champion, store),
        decision_threshold(registry, before.challenger, store),
    )
    stayers = outcomes.counts["counted"] - outcomes.counts["churners"]
    needed = get_settings().promotion_min_churners
    if stayers < needed and outcomes.counts["churners"] >= needed:
        return _await_stayers(registry, before, outcomes, stayers, needed, actor, dry_run)
    decision = promotion_decision(
        outcomes.y, outcomes.p_champion, outcomes.p_challenger, thresholds
    )
    if decision.promote:
        action = PROMOTED
        message = f"version {before.challenger} promoted over {before.champion}"
    elif decision.rule == "too_few_churners":
        action, message = DEFERRED, f"no decision yet: {decision.reasons[0]}"
    else:
        action = CLEARED
        message = f"champion {before.champion} kept, challenger {before.challenger} cleared"
    outcome = PromotionOutcome(action, message, before, decision, outcomes, dry_run)
    if dry_run:
        return outcome
    figures = {**outcome.figures(), "auto": auto}
    why = _reason(decision, reason, auto)
    if action == PROMOTED:
        after = registry.set_champion(before.challenger, actor, why, figures)
    elif action == CLEARED:
        after = registry.clear_challenger(actor, why, figures)
    else:
        registry.record(before.challenger, DEFERRED_ACTION, actor, why, figures)
        after = before
    return PromotionOutcome(action, message, after, decision, outcomes)
