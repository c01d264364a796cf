"""The champion/challenger experiment's evidence: both models' scores on labelled customers.

While a challenger is set, every logged prediction carries the answering model's
probability and the other model's (`shadow_probability`), so each customer is scored by
both: the comparison is paired. A prediction belongs to the experiment when its
(`model_version`, `shadow_version`) is (champion, challenger) or (challenger, champion),
whichever arm answered. Versions are the BentoML versions the log writes (the part after
``churn_model:``).

Labels judge predictions by the monitoring join (monitoring/label_join.py: a label judges
the customer's latest prediction, whatever version served it, at most the horizon before
it). **Only closed outcomes count**: a prediction counts when its horizon has passed
(``created_at + horizon_days <= now``) or a churn judging it was observed by ``now``. A
customer who has not churned *yet* is not a non-churner until the horizon has passed:
counting them early would bias both models' figures towards "stays". A prediction judged
by several labels is a churner if any of them is a churn.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import ColumnElement, Engine, and_, func, or_, select

from monitoring.database import PREDICTIONS
from monitoring.label_join import PREDICTION_COLUMNS, join_labels, read_labels

PAIR_COLUMNS = (*PREDICTION_COLUMNS, "shadow_version", "shadow_probability")


@dataclass(frozen=True)
class PairedOutcomes:
    """Labelled customers of the experiment with both models' probabilities."""

    y: np.ndarray
    """1 churned, 0 stayed (horizon closed)."""
    p_champion: np.ndarray
    p_challenger: np.ndarray
    counts: dict[str, int]
    """paired (experiment predictions), labelled (judged by a label), open (labelled, but
    neither churned nor past the horizon: not counted), counted, churners."""
    window: tuple[datetime | None, datetime]
    """First experiment prediction (None: none logged) and ``now``."""
    champion_version: str = ""
    challenger_version: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON-ready counts and window, for the audit trail."""
        start, end = self.window
        return {
            **self.counts,
            "window_start": start.isoformat() if start else None,
            "window_end": end.isoformat(),
            "champion_version": self.champion_version,
            "challenger_version": self.challenger_version,
        }


def _is_pair(champion: str, challenger: str) -> ColumnElement[bool]:
    c = PREDICTIONS.c
    return or_(
        and_(c.model_version == champion, c.shadow_version == challenger),
        and_(c.model_version == challenger, c.shadow_version == champion),
    )


def first_paired_at(engine: Engine, champion: str, challenger: str) -> datetime | None:
    """When the first prediction of this pair was logged (None: not yet)."""
    query = select(func.min(PREDICTIONS.c.created_at)).where(_is_pair(champion, challenger))
    with engine.connect() as connection:
        first: datetime | None = connection.execute(query).scalar()
    return first


def read_served(engine: Engine, start: datetime, end: datetime) -> pd.DataFrame:
    """Every prediction served in [start, end), with the shadow columns: the join needs
    all of them, since a label judges the customer's latest prediction of any version."""
    columns = [PREDICTIONS.c[name] for name in PAIR_COLUMNS]
    query = select(*columns).where(
        PREDICTIONS.c.created_at >= start, PREDICTIONS.c.created_at < end
    )
    with engine.connect() as connection:
        rows = list(connection.execute(query).tuples())
    frame = pd.DataFrame.from_records(rows, columns=list(PAIR_COLUMNS))
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    for name in ("churn_probability", "shadow_probability"):
        frame[name] = frame[name].astype("float64")
    return frame


def _judged(joined: pd.DataFrame) -> pd.DataFrame:
    """One row per judged prediction: a churner if any label judging it is a churn."""
    if joined.empty:
        return pd.DataFrame(
            {
                "churned": pd.Series(dtype=bool),
                "created_at": pd.Series(dtype="datetime64[ns, UTC]"),
                "model_version": pd.Series(dtype=object),
                "churn_probability": pd.Series(dtype="float64"),
                "shadow_probability": pd.Series(dtype="float64"),
            }
        )
    return joined.groupby("id", sort=True).agg(
        churned=("churned", "any"),
        created_at=("created_at", "first"),
        model_version=("model_version", "first"),
        churn_probability=("churn_probability", "first"),
        shadow_probability=("shadow_probability", "first"),
    )


def paired_outcomes(
    engine: Engine,
    champion_version: str,
    challenger_version: str,
    now: datetime,
    horizon_days: int,
) -> PairedOutcomes:
    """The experiment's closed outcomes up to `now` (module rule), each with both scores."""
    start = first_paired_at(engine, champion_version, challenger_version)
    empty = np.empty(0)
    zero = dict.fromkeys(("paired", "labelled", "open", "counted", "churners"), 0)
    if start is None:
        return PairedOutcomes(
            empty, empty, empty, zero, (None, now), champion_version, challenger_version
        )
    served = read_served(engine, start, now)
    labels = read_labels(engine, start, now)  # observed on or before now's date
    is_pair = (
        (served["model_version"] == champion_version)
        & (served["shadow_version"] == challenger_version)
    ) | (
        (served["model_version"] == challenger_version)
        & (served["shadow_version"] == champion_version)
    )
    is_pair &= served["shadow_probability"].notna()
    joined = join_labels(served, labels, horizon_days)
    judged = _judged(joined[joined["id"].isin(set(served.loc[is_pair, "id"]))])
    closed = judged["created_at"] + timedelta(days=horizon_days) <= pd.Timestamp(now)
    counted = judged[judged["churned"] | closed]
    champion_answered = (counted["model_version"] == champion_version).to_numpy()
    answered = counted["churn_probability"].to_numpy(dtype=np.float64)
    shadow = counted["shadow_probability"].to_numpy(dtype=np.float64)
    y = counted["churned"].to_numpy().astype(np.int64)
    counts = {
        "paired": int(is_pair.sum()),
        "labelled": len(judged),
        "open": len(judged) - len(counted),
        "counted": len(counted),
        "churners": int(y.sum()),
    }
    return PairedOutcomes(
        y,
        np.where(champion_answered, answered, shadow),
        np.where(champion_answered, shadow, answered),
        counts,
        (start, now),
        champion_version,
        challenger_version,
    )
