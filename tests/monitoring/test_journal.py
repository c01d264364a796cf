"""The per-worker journal (monitoring/journal.py) and the log's durability checks, on real
files, real processes (SIGKILL) and real databases."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from sqlalchemy import Engine

from core.settings import PROJECT_ROOT
from monitoring.journal import JOURNAL_PREFIX, GroupCommit, Journal, adopt_dead_journals
from monitoring.prediction_log import PredictionLog, PredictionRecord

Make = Callable[..., PredictionRecord]
Count = Callable[..., int]
Wait = Callable[..., None]

DEAD_DATABASE = "postgresql://postgres@127.0.0.1:1/nowhere"
"""Nothing listens on port 1: every connection is refused at once (a database outage)."""

KILLED_WRITER = """
import os, signal, sys
from monitoring.journal import Journal, journal_payload
from monitoring.records import PredictionRecord
journal = Journal(sys.argv[1])
records = [
    PredictionRecord(request_id=f"killed-{i}", customer_hash="h", model_version="v",
                     features={"tenure_months": i}, churn_probability=0.5, will_churn=False,
                     risk_level="medium", latency_ms=1.0, cache="none", endpoint="predict")
    for i in range(30)
]
journal.append(journal_payload(records), 0)
print("journaled", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def journal_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{JOURNAL_PREFIX}-*"))


def test_a_killed_processs_journal_is_replayed_into_the_database(
    engine: Engine, tmp_path: Path, count: Count, wait_for: Wait
) -> None:
    spool = tmp_path / "spool"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(spool)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9 and "journaled" in killed.stdout, killed.stderr
    assert len(journal_files(spool)) == 1
    with PredictionLog(engine, spool, flush_ms=10):
        wait_for(lambda: count(engine) == 30, timeout=30)
    assert journal_files(spool) == []


def test_a_living_workers_journal_is_not_adopted(tmp_path: Path, make_record: Make) -> None:
    from monitoring.journal import journal_payload

    journal = Journal(tmp_path)
    journal.append(journal_payload([make_record()]), 0)
    assert adopt_dead_journals(tmp_path, "predictions") == 0  # its lock is held
    assert len(journal_files(tmp_path)) == 1
    journal.close(remove=False)  # as if the process died: the lock is gone
    assert adopt_dead_journals(tmp_path, "predictions") == 1
    assert journal_files(tmp_path) == [] and len(list(tmp_path.glob("predictions-*"))) == 1


def test_concurrent_commits_share_one_write(tmp_path: Path, make_record: Make) -> None:
    class Counting(Journal):
        writes = 0

        def append(self, payload: bytes, accepted: int) -> None:
            Counting.writes += 1
            super().append(payload, accepted)

    handed: list[PredictionRecord] = []

    def handoff(records: Sequence[PredictionRecord]) -> int:
        handed.extend(records)
        return len(handed)

    commit = GroupCommit(Counting(tmp_path), handoff)

    async def many() -> None:
        await asyncio.gather(*(commit.commit([make_record(f"C{i}")]) for i in range(50)))

    asyncio.run(many())
    assert len(handed) == 50
    assert Counting.writes < 50 / 5, Counting.writes
    lines = journal_files(tmp_path)[0].read_bytes().count(b"\n")
    assert lines == 50


def test_the_journal_is_trimmed_once_its_rows_are_stored(
    engine: Engine, tmp_path: Path, make_record: Make, count: Count, wait_for: Wait
) -> None:
    spool = tmp_path / "spool"
    log = PredictionLog(engine, spool, flush_ms=10, journal=True)
    assert log.journal is not None and log.group_commit is not None
    log.journal.segment_bytes = 2_000  # a few rows per segment

    async def serve() -> None:
        for i in range(60):
            await log.group_commit.commit([make_record(f"C{i}", request_id=f"r{i}")])  # type: ignore[union-attr]

    asyncio.run(serve())
    assert log.flush(10)
    assert count(engine) == 60
    # The writer trims right after the rows leave memory: the current segment stays.
    wait_for(lambda: len(journal_files(spool)) == 1, timeout=30)
    assert log.close()
    assert journal_files(spool) == []  # a clean close leaves nothing to replay


def test_an_unwritable_journal_refuses_the_commit(tmp_path: Path, make_record: Make) -> None:
    from monitoring.journal import NotDurable

    folder = tmp_path / "spool"
    folder.write_text("a file where the folder should be")
    log = PredictionLog(DEAD_DATABASE, folder, journal=True, start=False)
    with pytest.raises(NotDurable, match="journal not writable"):
        asyncio.run(log.group_commit.commit([make_record()]))  # type: ignore[union-attr]
    assert log.durability_problem() is not None
    assert log.pending_rows() == 0  # nothing was accepted for an answer that is refused


def test_database_down_and_spool_unwritable_keeps_rows_and_says_why(
    tmp_path: Path, make_record: Make, wait_for: Wait
) -> None:
    folder = tmp_path / "spool"
    moved = tmp_path / "moved"
    folder.mkdir()
    with PredictionLog(DEAD_DATABASE, folder, flush_ms=10, retry_max_s=0.2) as log:
        wait_for(lambda: log.stats().failures > 0, timeout=30)
        assert log.durability_problem() is None  # the spool can still take rows
        folder.rename(moved)
        folder.write_text("not a folder")
        wait_for(lambda: log.durability_problem() is not None, timeout=30)
        assert "spool not writable" in str(log.durability_problem())
        log.log([make_record(f"C{i}") for i in range(5)])
        time.sleep(1.5)  # several delivery attempts fail
        assert log.stats().lost == 0 and log.pending_rows() == 5  # kept, not dropped
        folder.unlink()
        moved.rename(folder)
        wait_for(lambda: log.durability_problem() is None, timeout=30)
        assert log.flush(10)
        assert log.stats().spooled == 5 and log.stats().lost == 0


def test_rows_that_can_go_nowhere_are_counted_lost(tmp_path: Path, make_record: Make) -> None:
    folder = tmp_path / "spool"
    folder.write_text("not a folder")
    log = PredictionLog(DEAD_DATABASE, folder, max_queue_rows=2, start=False)
    log.log([make_record(f"C{i}") for i in range(5)])  # 2 queued, 3 overflow nowhere
    assert log.stats().lost == 3
    log.close(timeout=1)
    assert log.stats().lost == 5  # closing with nowhere to put the queued ones
