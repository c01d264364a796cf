"""`waiting_bytes`: what `churn_prediction_log_spool_bytes` (PredictionLogBacklog) reads."""

from __future__ import annotations

from pathlib import Path

from monitoring.journal import JOURNAL_PREFIX
from monitoring.spool import READY_SUFFIX, Spool, waiting_bytes


def test_spooled_rows_count_until_replayed_and_journals_never(tmp_path: Path) -> None:
    assert waiting_bytes(tmp_path / "missing") == 0
    (tmp_path / f"{JOURNAL_PREFIX}-1-ab{READY_SUFFIX}").write_bytes(b"x" * 100)
    assert waiting_bytes(tmp_path) == 0, "a live worker's journal is not a backlog"
    spool = Spool(tmp_path)
    spool.append([{"id": "a"}, {"id": "b"}])
    written = waiting_bytes(tmp_path)
    assert written > 0
    claimed = spool.claim()
    assert claimed is not None
    assert waiting_bytes(tmp_path) == written, "being replayed: still waiting"
    claimed.done()
    assert waiting_bytes(tmp_path) == 0
    Spool(tmp_path, prefix="labels").append([{"id": "c"}])
    assert waiting_bytes(tmp_path) == 0, "labels are not prediction-log rows"
