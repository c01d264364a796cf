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
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from core.settings import Settings
from monitoring.database import make_engine, upgrade_schema
from monitoring.feedback import LABELS_SPOOL_PREFIX, decode_label_row, upsert_ground_truth
from monitoring.journal import GroupCommit, Journal, adopt_dead_journals
from monitoring.records import PredictionRecord, decode_row, insert_rows, record_row
from monitoring.replay import is_outage, replay_one, set_aside, store_rows
from monitoring.spool import Spool, spool_problem

__all__ = ["LogStats", "PredictionLog", "PredictionRecord"]

logger = logging.getLogger("churn.monitoring.log")

PREDICTIONS_SPOOL_PREFIX = "predictions"
SPOOL_FILE_BYTES = 8 * 1024 * 1024
"""Small spool files: one is replayed between two queue batches, so a long backlog does
not starve the queue (which would then spill to disk on the request path)."""
SPOOL_SCAN_S = 5.0
"""How often an idle writer looks for spool files left by other workers or a crash."""
IDLE_TICK_S = 1.0
PROBE_S = 0.5
"""How often the writer re-checks whether rows can be made durable while the database is down."""
HOLD_S = 1.0
"""How long rows that neither the database nor the spool took wait before the next try."""
JOURNAL_FAILURE_S = 1.0
"""A failed journal write makes the log not durable for this long (then writes are tried again)."""


@dataclass(frozen=True)
class LogStats:
    """Row counts since start-up, for metrics. `pending`: rows in memory now."""

    written: int = 0
    """Rows from the queue now in the database."""
    spooled: int = 0
    """Rows written to the spool (database down, or queue full)."""
    replayed: int = 0
    """Rows (predictions and labels) moved from the spool into the database."""
    rejected: int = 0
    """Rows the database refused as data; kept in the spool's rejected/ folder."""
    lost: int = 0
    """Rows dropped: malformed, or neither written nor spooled while the queue was full or
    the log closing (without a journal they are gone; with one, the next start replays them)."""
    failures: int = 0
    """Failed attempts to reach the database."""
    pending: int = 0
    database_up: bool = False


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
        self._spool = Spool(spool_dir, PREDICTIONS_SPOOL_PREFIX, max_file_bytes=SPOOL_FILE_BYTES)
        self._label_spool = Spool(spool_dir, LABELS_SPOOL_PREFIX, max_file_bytes=SPOOL_FILE_BYTES)
        self._max_rows = max_queue_rows
        self._batch_rows = batch_rows
        self._flush_s = flush_ms / 1000
        self._retry_initial = retry_initial_s
        self._retry_max = retry_max_s
        self.journal = Journal(spool_dir) if journal else None
        self.group_commit = GroupCommit(self.journal, self._handoff) if self.journal else None
        self._problem: str | None = None  # maintained by the writer thread
        self._probed_at = 0.0

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
        self._counts = dict.fromkeys(("written", "spooled", "replayed", "rejected", "lost"), 0)
        self._failures = 0

        # Writer-thread state.
        self._schema_ready = not migrate
        self._database_up = False
        self._delay = 0.0
        self._retry_at = 0.0
        self._spool_dirty = True  # files may be left from a previous run
        self._last_scan = 0.0
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
            if kept < len(records) and not self._to_spool(self._rows(records[kept:])):
                self._count("lost", len(records) - kept)
        except Exception:
            logger.exception("prediction log: %d rows could not be queued", len(records))
            self._count("lost", len(records))

    def _handoff(self, records: Sequence[PredictionRecord]) -> int:
        """The journal's hand-off: queue rows already on disk; rows accepted so far."""
        self.log(records)
        return self._accepted

    def pending_rows(self) -> int:
        """Rows in memory, not yet in the database or the spool."""
        return self._in_memory

    def stats(self) -> LogStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return LogStats(
                **self._counts,
                failures=self._failures,
                pending=self._in_memory,
                database_up=self._database_up,
            )

    def durability_problem(self) -> str | None:
        """Why rows logged now could not be made durable (None: they can).

        Readiness and the scoring routes consult it: a prediction whose row could be
        neither written nor spooled must not be answered as if it were logged. Cheap (the
        writer thread keeps the answer up to date): it is read on every scoring request.
        """
        commit = self.group_commit
        if commit is not None and time.monotonic() - commit.failed_at < JOURNAL_FAILURE_S:
            return commit.failure
        return self._problem

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
            if not self._to_spool(self._rows(leftover)):
                self._count("lost", len(leftover))
            self._finish(len(leftover))
        clean = flushed and not stuck and self._counts["lost"] == 0
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
        while True:
            batch = self._next_batch()
            if batch:
                rows = self._rows(batch)
                try:
                    stored = self._deliver(rows)
                except Exception as error:  # the writer must survive anything
                    logger.exception("prediction log: batch of %d rows failed", len(rows))
                    self._mark_down(error)
                    stored = self._to_spool(rows)  # replay is idempotent if part was written
                if stored or self._stopping:
                    if not stored:
                        self._count("lost", len(rows))
                    self._finish(len(batch))
                else:
                    self._hold(batch)
                self._check_durability()
                continue
            with self._lock:
                if self._stopping and not self._queue:
                    return
            try:
                self._database_ready()
                self._check_durability()
            except Exception as error:
                logger.exception("prediction log: housekeeping failed")
                self._mark_down(error)

    def _next_batch(self) -> list[PredictionRecord]:
        """Up to `batch_rows` rows, waiting at most `flush_ms` for a batch to fill; []
        when idle (time for housekeeping) or stopping."""
        with self._lock:
            if not self._queue and not self._stopping:
                self._wake.wait(self._idle_timeout())
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

    def _idle_timeout(self) -> float:
        if self._schema_ready and not self._spool_dirty:
            return IDLE_TICK_S
        return min(IDLE_TICK_S, max(0.0, self._retry_at - time.monotonic()))

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
        self._check_durability(force=True)
        with self._lock:
            self._queue.extendleft(reversed(batch))
            if not self._stopping:
                self._wake.wait(HOLD_S)

    def _check_durability(self, force: bool = False) -> None:
        """Refresh `durability_problem()`: rows are durable while the database is up or
        the spool can be written. Both are tried, at most every `PROBE_S`: the spool by
        writing a file, the database (only when the spool fails) by a round trip, so an
        idle worker notices the double fault before a request does."""
        now = time.monotonic()
        if not force and now - self._probed_at < PROBE_S:
            return
        self._probed_at = now
        failure = spool_problem(self._spool.directory)
        if failure is not None and self._database_up:
            try:
                with self.engine.connect() as connection:
                    connection.execute(text("select 1"))
            except Exception as error:
                self._mark_down(error)
        problem = None
        if failure is not None and not self._database_up:
            # Said to callers: the kind of failure, not server paths (those go to the log).
            problem = f"database unavailable and spool not writable ({type(failure).__name__})"
        if problem != self._problem:
            if problem:
                logger.error("prediction log: %s: %s", problem, failure)
            else:
                logger.info("prediction log: rows can be made durable again")
        self._problem = problem

    def _count(self, name: str, rows: int) -> None:
        with self._lock:
            self._counts[name] += rows

    def _deliver(self, rows: list[dict[str, Any]]) -> bool:
        """Rows to the database, else the spool; False if neither took them."""
        if not rows:
            return True
        if not self._database_ready():
            return self._to_spool(rows)
        try:
            rejected = store_rows(self.engine, rows, insert_rows)
        except Exception as error:
            if not is_outage(error):
                raise
            self._mark_down(error)
            return self._to_spool(rows)
        self._mark_up()
        self._count("rejected", set_aside(self._spool, list(rejected)))
        self._count("written", len(rows) - len(rejected))
        return True

    def _database_ready(self) -> bool:
        """Schema in place and spool replayed (one file per call); False during backoff."""
        if time.monotonic() < self._retry_at:
            return False
        try:
            if not self._schema_ready:
                upgrade_schema(self.engine)
                self._schema_ready = True
                self._mark_up()
            if not self._stopping:
                self._replay_if_due()
        except Exception as error:
            self._mark_down(error)
            return False
        return True

    def _mark_down(self, error: BaseException) -> None:
        with self._lock:
            self._failures += 1
        self._delay = min(self._retry_max, self._delay * 2 or self._retry_initial)
        self._retry_at = time.monotonic() + self._delay
        if self._database_up or self._failures == 1:
            logger.warning(
                "prediction log: database unavailable (%s: %s); rows go to %s, retrying",
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
                self._spool.directory,
            )
        self._database_up = False

    def _mark_up(self) -> None:
        if not self._database_up and self._failures:
            logger.info("prediction log: database available again")
        self._database_up = True
        self._problem = None
        self._delay = 0.0
        self._retry_at = 0.0

    def _rows(self, records: Sequence[PredictionRecord]) -> list[dict[str, Any]]:
        """Column values of each record; a malformed record is logged and counted lost."""
        rows = []
        for record in records:
            try:
                rows.append(record_row(record))
            except Exception:
                logger.exception("prediction log: malformed record dropped: %r", record)
                self._count("lost", 1)
        return rows

    def _to_spool(self, rows: list[dict[str, Any]]) -> bool:
        """Append rows to the spool; False on failure (disk full...), never raises."""
        if not rows:
            return True
        try:
            self._spool.append(rows)
        except Exception as error:
            logger.error("prediction log: %d rows not spooled: %s", len(rows), error)
            return False
        self._spool_dirty = True
        self._count("spooled", len(rows))
        return True

    def _replay_if_due(self) -> None:
        """Replay one spool file of each kind when files may be waiting."""
        now = time.monotonic()
        if not self._spool_dirty and now - self._last_scan < SPOOL_SCAN_S:
            return
        self._spool_dirty = False  # before listing: an append after it sets it again
        self._last_scan = now
        try:
            if adopt_dead_journals(self._spool.directory, PREDICTIONS_SPOOL_PREFIX):
                self._spool_dirty = True
            kinds = (
                (self._spool, decode_row, insert_rows),
                (self._label_spool, decode_label_row, upsert_ground_truth),
            )
            for spool, decode, write in kinds:
                done = replay_one(spool, self.engine, decode, write, self._batch_rows)
                if done is not None:
                    self._spool_dirty = True  # maybe more: next round, after a queue batch
                    self._count("replayed", done.stored)
                    self._count("rejected", done.rejected)
                    self._mark_up()
        except BaseException:
            self._spool_dirty = True
            raise
