"""The prediction log: every served prediction becomes a row, off the request path.

`PredictionLog.log` only appends to a bounded in-memory queue; one daemon thread per
process batches rows into INSERT ... ON CONFLICT (id) DO NOTHING. When the database is
down the rows go to the on-disk spool (fsynced) and are replayed when it is back, so
nothing is lost and, rows carrying their own id, nothing is written twice. With a
`Journal` (monitoring/journal.py) the rows are on disk before they reach this queue, so a
killed worker loses none either; the writer trims the journal as rows leave memory.

When the database is down AND the spool cannot be written, rows stay in memory (and the
journal) and `durability_problem()` says why, so the service refuses new predictions
instead of answering for rows it cannot keep.

This module is the queue, its bounds and the writer thread; where a batch goes (database,
spool, replay, the durability check) is `monitoring/log_delivery.py`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from core.settings import Settings
from monitoring.database import make_engine
from monitoring.journal import GroupCommit, Journal
from monitoring.log_delivery import (
    PREDICTIONS_SPOOL_PREFIX,
    SPOOL_FILE_BYTES,
    Delivery,
    LogCounters,
    LogStats,
)
from monitoring.records import PredictionRecord

__all__ = [
    "PREDICTIONS_SPOOL_PREFIX",
    "SPOOL_FILE_BYTES",
    "LogStats",
    "PredictionLog",
    "PredictionRecord",
]

logger = logging.getLogger("churn.monitoring.log")

IDLE_TICK_S = 1.0
HOLD_S = 1.0
"""How long rows that neither the database nor the spool took wait before the next try."""
JOURNAL_FAILURE_S = 1.0
"""A failed journal write makes the log not durable for this long (then writes are tried again)."""


class PredictionLog:
    """Asynchronous, bounded, crash-tolerant writer of prediction rows.

    `database` is an Engine (kept open on close: the caller owns it), a URL or a
    factory. Several processes may share one database and one spool folder.
    """

    def __init__(
        self,
        database: Engine | str | Callable[[], Engine],
        spool_dir: Path,
        *,
        max_queue_rows: int = 20_000,
        batch_rows: int = 500,
        flush_ms: int = 200,
        migrate: bool = True,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        journal: bool = False,
        start: bool = True,
    ) -> None:
        if max_queue_rows < 1 or batch_rows < 1 or flush_ms < 0:
            raise ValueError("max_queue_rows and batch_rows must be >= 1, flush_ms >= 0")
        self._owns_engine = not isinstance(database, Engine)
        if isinstance(database, Engine):
            self.engine = database
        elif isinstance(database, str):
            self.engine = make_engine(database)
        else:
            self.engine = database()
        self._counters = LogCounters()
        self._delivery = Delivery(
            self.engine,
            spool_dir,
            self._counters,
            batch_rows=batch_rows,
            migrate=migrate,
            retry_initial_s=retry_initial_s,
            retry_max_s=retry_max_s,
        )
        self._max_rows = max_queue_rows
        self._batch_rows = batch_rows
        self._flush_s = flush_ms / 1000
        self.journal = Journal(spool_dir) if journal else None
        self.group_commit = GroupCommit(self.journal, self._handoff) if self.journal else None

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # writer: rows, flush, stop
        self._drained = threading.Condition(self._lock)  # flush(): rows left memory
        self._queue: deque[PredictionRecord] = deque()
        self._in_memory = 0  # queued + the batch being written: the bounded quantity
        self._accepted = 0  # rows ever put in memory
        self._finished = 0  # rows ever out of memory (written, spooled or rejected)
        self._flush_target = 0
        self._accepting = True
        self._stopping = False
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> PredictionLog:
        """A log configured from CHURN_* settings (DATABASE_URL, spool dir, sizes)."""
        return cls(
            settings.database_url,
            settings.spool_dir,
            max_queue_rows=settings.log_queue_rows,
            batch_rows=settings.log_batch_rows,
            flush_ms=settings.log_flush_ms,
            journal=settings.log_journal,
            **options,
        )

    def start(self) -> None:
        """Start the writer thread (done by the constructor unless `start=False`)."""
        with self._lock:
            if self._thread is None and self._accepting:
                self._thread = threading.Thread(
                    target=self._run, name="prediction-log-writer", daemon=True
                )
                self._thread.start()

    # Request path.

    def log(self, records: Sequence[PredictionRecord]) -> None:
        """Queue rows for writing. Never raises, never touches the database.

        Rows beyond the memory bound (or after close) are appended to the spool here,
        synchronously: slower, but nothing is dropped and memory stays bounded.
        """
        if not records:
            return
        try:
            with self._lock:
                kept = 0
                if self._accepting:
                    kept = min(len(records), self._max_rows - self._in_memory)
                if kept > 0:
                    was_empty = not self._queue
                    self._queue.extend(records[:kept])
                    self._in_memory += kept
                    self._accepted += kept
                    # Wake the writer only when it has something new to decide, not
                    # once per request: it otherwise waits out flush_ms on its own.
                    if was_empty or len(self._queue) >= self._batch_rows:
                        self._wake.notify()
            delivery = self._delivery
            if kept < len(records) and not delivery.to_spool(delivery.rows(records[kept:])):
                self._counters.add("lost", len(records) - kept)
        except Exception:
            logger.exception("prediction log: %d rows could not be queued", len(records))
            self._counters.add("lost", len(records))

    def _handoff(self, records: Sequence[PredictionRecord]) -> int:
        """The journal's hand-off: queue rows already on disk; rows accepted so far."""
        self.log(records)
        return self._accepted

    def pending_rows(self) -> int:
        """Rows in memory, not yet in the database or the spool."""
        return self._in_memory

    def stats(self) -> LogStats:
        """A consistent snapshot of the counters."""
        return self._counters.stats(self._in_memory, self._delivery.database_up)

    def durability_problem(self) -> str | None:
        """Why rows logged now could not be made durable (None: they can).

        Readiness and the scoring routes consult it: a prediction whose row could be
        neither written nor spooled must not be answered as if it were logged. Cheap (the
        writer thread keeps the answer up to date): it is read on every scoring request.
        """
        commit = self.group_commit
        if commit is not None and time.monotonic() - commit.failed_at < JOURNAL_FAILURE_S:
            return commit.failure
        return self._delivery.problem

    # Shutdown.

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until rows logged so far are out of memory: in the database, or spooled
        if it is down. False if that did not happen within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._accepted
            self._flush_target = max(self._flush_target, target)
            self._wake.notify()
            while self._finished < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._drained.wait(remaining)
            return True

    def close(self, timeout: float = 10.0) -> bool:
        """Flush, stop the writer, spool whatever is still in memory. Idempotent.

        Rows logged after close go straight to the spool. True if everything was
        written or spooled cleanly within `timeout`.
        """
        deadline = time.monotonic() + timeout
        flushed = self.flush(timeout)
        with self._lock:
            self._accepting = False
            self._stopping = True
            self._wake.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = thread is not None and thread.is_alive()
        with self._lock:
            leftover = list(self._queue)
            self._queue.clear()
        if leftover:
            if not self._delivery.to_spool(self._delivery.rows(leftover)):
                self._counters.add("lost", len(leftover))
            self._finish(len(leftover))
        clean = flushed and not stuck and self._counters.lost == 0
        if self.journal is not None:
            self.journal.close(remove=clean)  # else the next start replays it
        if stuck:
            logger.warning("prediction log: writer still busy after %.1f s", timeout)
        elif self._owns_engine:
            self.engine.dispose()
        return clean and not leftover

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # Writer thread.

    def _run(self) -> None:
        delivery = self._delivery
        while True:
            batch = self._next_batch()
            if batch:
                rows = delivery.rows(batch)
                try:
                    stored = delivery.deliver(rows, replay=not self._stopping)
                except Exception as error:  # the writer must survive anything
                    logger.exception("prediction log: batch of %d rows failed", len(rows))
                    delivery.mark_down(error)
                    stored = delivery.to_spool(rows)  # replay is idempotent if part was written
                if stored or self._stopping:
                    if not stored:
                        self._counters.add("lost", len(rows))
                    self._finish(len(batch))
                else:
                    self._hold(batch)
                delivery.check_durability()
                continue
            with self._lock:
                if self._stopping and not self._queue:
                    return
            try:
                delivery.ready(replay=not self._stopping)
                delivery.check_durability()
            except Exception as error:
                logger.exception("prediction log: housekeeping failed")
                delivery.mark_down(error)

    def _next_batch(self) -> list[PredictionRecord]:
        """Up to `batch_rows` rows, waiting at most `flush_ms` for a batch to fill; []
        when idle (time for housekeeping) or stopping."""
        with self._lock:
            if not self._queue and not self._stopping:
                self._wake.wait(self._delivery.idle_wait(IDLE_TICK_S))
            if not self._queue:
                return []
            deadline = time.monotonic() + self._flush_s
            while (
                len(self._queue) < self._batch_rows
                and not self._stopping
                and self._flush_target <= self._finished
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.wait(remaining)
            size = min(self._batch_rows, len(self._queue))
            return [self._queue.popleft() for _ in range(size)]

    def _finish(self, rows: int) -> None:
        with self._lock:
            self._in_memory -= rows
            self._finished += rows
            finished = self._finished
            self._drained.notify_all()
        if self.journal is not None:
            try:
                self.journal.trim(finished)
            except OSError:
                logger.exception("prediction log: journal not trimmed (replaying it is harmless)")

    def _hold(self, batch: list[PredictionRecord]) -> None:
        """Neither the database nor the spool took the rows: keep them (first in line)
        and say so, so no new prediction is answered for rows that cannot be kept."""
        self._delivery.check_durability(force=True)
        with self._lock:
            self._queue.extendleft(reversed(batch))
            if not self._stopping:
                self._wake.wait(HOLD_S)
