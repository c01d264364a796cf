"""Retraining triggers on SQLite and PostgreSQL: recorded, listed, consumed once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from monitoring.triggers import consume_triggers, pending_triggers, record_trigger


def test_triggers_are_listed_oldest_first_until_consumed(engine: Engine) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    later = record_trigger(
        engine, "performance", "v2", [], {"accuracy": 0.84}, now=start + timedelta(hours=1)
    )
    first = record_trigger(
        engine, "drift", "v1", ["tenure_months"], {"tenure_months": 0.41}, now=start
    )

    pending = pending_triggers(engine)
    assert [t.id for t in pending] == [first, later]
    assert pending[0].features == ["tenure_months"]
    assert pending[0].figures == {"tenure_months": 0.41}
    assert pending[0].created_at == start

    assert consume_triggers(engine, [first]) == 1
    assert consume_triggers(engine, [first]) == 0  # already consumed: not counted twice
    assert [t.id for t in pending_triggers(engine)] == [later]


def test_an_unknown_reason_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="reason must be one of"):
        record_trigger(engine, "whim", "v1", [], {})
    assert pending_triggers(engine) == []
