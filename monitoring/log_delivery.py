"""Where the prediction log's rows go: the database, else the spool, and back again.

`PredictionLog` (monitoring/prediction_log.py) owns the in-memory queue and the writer
thread; the thread hands each batch to a `Delivery`, which inserts it, spools it while the
database is down (retrying with backoff), replays spool files once the database is back,
and keeps `problem` (why rows could not be made durable now) current. The row counts both
sides keep are `LogCounters`, read as `LogStats`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from monitoring.database import upgrade_schema
from monitoring.feedback import LABELS_SPOOL_PREFIX, decode_label_row, upsert_ground_truth
from monitoring.journal import adopt_dead_journals
from monitoring.records import PredictionRecord, decode_row, insert_rows, record_row
from monitoring.replay import is_outage, replay_one, set_aside, store_rows
from monitoring.spool import Spool, spool_problem

logger = logging.getLogger("churn.monitoring.log")

PREDICTIONS_SPOOL_PREFIX = "predictions"
SPOOL_FILE_BYTES = 8 * 1024 * 1024
"""Small spool files: one is replayed between two queue batches, so a long backlog does
not starve the queue (which would then spill to disk on the request path)."""
SPOOL_SCAN_S = 5.0
"""How often an idle writer looks for spool files left by other workers or a crash."""
PROBE_S = 0.5
"""How often the writer re-checks whether rows can be made durable while the database is down."""


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


class LogCounters:
    """The counts of `LogStats`, added to by the request path and the writer thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows = dict.fromkeys(("written", "spooled", "replayed", "rejected", "lost"), 0)
        self._failures = 0

    def add(self, outcome: str, rows: int) -> None:
        with self._lock:
            self._rows[outcome] += rows

    def failed(self) -> int:
        """Count a failed attempt to reach the database; returns the failures so far."""
        with self._lock:
            self._failures += 1
            return self._failures

    @property
    def lost(self) -> int:
        return self._rows["lost"]

    @property
    def failures(self) -> int:
        return self._failures

    def stats(self, pending: int, database_up: bool) -> LogStats:
        with self._lock:
            return LogStats(
                **self._rows, failures=self._failures, pending=pending, database_up=database_up
            )


class Delivery:
    """Rows to the database or the spool, for one log. Used by its writer thread, except
    `rows` and `to_spool`, which the request path also calls (the queue full, or closed)."""

    def __init__(
        self,
        engine: Engine,
        spool_dir: Path,
        counters: LogCounters,
        *,
        batch_rows: int,
        migrate: bool,
        retry_initial_s: float,
        retry_max_s: float,
    ) -> None:
        self.engine = engine
        self.spool = Spool(spool_dir, PREDICTIONS_SPOOL_PREFIX, max_file_bytes=SPOOL_FILE_BYTES)
        self._label_spool = Spool(spool_dir, LABELS_SPOOL_PREFIX, max_file_bytes=SPOOL_FILE_BYTES)
        self._counters = counters
        self._batch_rows = batch_rows
        self._retry_initial = retry_initial_s
        self._retry_max = retry_max_s
        self.problem: str | None = None
        """Why rows could not be made durable now (None: they can)."""
        self.database_up = False
        self._probed_at = 0.0
        self._schema_ready = not migrate
        self._delay = 0.0
        self._retry_at = 0.0
        self._spool_dirty = True  # files may be left from a previous run
        self._last_scan = 0.0

    def idle_wait(self, tick: float) -> float:
        """How long an idle writer may sleep: `tick`, or less while a retry is due."""
        if self._schema_ready and not self._spool_dirty:
            return tick
        return min(tick, max(0.0, self._retry_at - time.monotonic()))

    def rows(self, records: Sequence[PredictionRecord]) -> list[dict[str, Any]]:
        """Column values of each record; a malformed record is logged and counted lost."""
        rows = []
        for record in records:
            try:
                rows.append(record_row(record))
            except Exception:
                logger.exception("prediction log: malformed record dropped: %r", record)
                self._counters.add("lost", 1)
        return rows

    def deliver(self, rows: list[dict[str, Any]], replay: bool) -> bool:
        """Rows to the database, else the spool; False if neither took them."""
        if not rows:
            return True
        if not self.ready(replay):
            return self.to_spool(rows)
        try:
            rejected = store_rows(self.engine, rows, insert_rows)
        except Exception as error:
            if not is_outage(error):
                raise
            self.mark_down(error)
            return self.to_spool(rows)
        self._mark_up()
        self._counters.add("rejected", set_aside(self.spool, list(rejected)))
        self._counters.add("written", len(rows) - len(rejected))
        return True

    def to_spool(self, rows: list[dict[str, Any]]) -> bool:
        """Append rows to the spool; False on failure (disk full...), never raises."""
        if not rows:
            return True
        try:
            self.spool.append(rows)
        except Exception as error:
            logger.error("prediction log: %d rows not spooled: %s", len(rows), error)
            return False
        self._spool_dirty = True
        self._counters.add("spooled", len(rows))
        return True

    def ready(self, replay: bool) -> bool:
        """Schema in place and, with `replay`, the spool replayed (one file per call);
        False during backoff."""
        if time.monotonic() < self._retry_at:
            return False
        try:
            if not self._schema_ready:
                upgrade_schema(self.engine)
                self._schema_ready = True
                self._mark_up()
            if replay:
                self._replay_if_due()
        except Exception as error:
            self.mark_down(error)
            return False
        return True

    def check_durability(self, force: bool = False) -> None:
        """Refresh `problem`: rows are durable while the database is up or the spool can
        be written. Both are tried, at most every `PROBE_S`: the spool by writing a file,
        the database (only when the spool fails) by a round trip, so an idle worker
        notices the double fault before a request does."""
        now = time.monotonic()
        if not force and now - self._probed_at < PROBE_S:
            return
        self._probed_at = now
        failure = spool_problem(self.spool.directory)
        if failure is not None and self.database_up:
            try:
                with self.engine.connect() as connection:
                    connection.execute(text("select 1"))
            except Exception as error:
                self.mark_down(error)
        problem = None
        if failure is not None and not self.database_up:
            # Said to callers: the kind of failure, not server paths (those go to the log).
            problem = f"database unavailable and spool not writable ({type(failure).__name__})"
        if problem != self.problem:
            if problem:
                logger.error("prediction log: %s: %s", problem, failure)
            else:
                logger.info("prediction log: rows can be made durable again")
        self.problem = problem

    def mark_down(self, error: BaseException) -> None:
        failures = self._counters.failed()
        self._delay = min(self._retry_max, self._delay * 2 or self._retry_initial)
        self._retry_at = time.monotonic() + self._delay
        if self.database_up or failures == 1:
            logger.warning(
                "prediction log: database unavailable (%s: %s); rows go to %s, retrying",
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
                self.spool.directory,
            )
        self.database_up = False

    def _mark_up(self) -> None:
        if not self.database_up and self._counters.failures:
            logger.info("prediction log: database available again")
        self.database_up = True
        self.problem = None
        self._delay = 0.0
        self._retry_at = 0.0

    def _replay_if_due(self) -> None:
        """Replay one spool file of each kind when files may be waiting."""
        now = time.monotonic()
        if not self._spool_dirty and now - self._last_scan < SPOOL_SCAN_S:
            return
        self._spool_dirty = False  # before listing: an append after it sets it again
        self._last_scan = now
        try:
            if adopt_dead_journals(self.spool.directory, PREDICTIONS_SPOOL_PREFIX):
                self._spool_dirty = True
            kinds = (
                (self.spool, decode_row, insert_rows),
                (self._label_spool, decode_label_row, upsert_ground_truth),
            )
            for spool, decode, write in kinds:
                done = replay_one(spool, self.engine, decode, write, self._batch_rows)
                if done is not None:
                    self._spool_dirty = True  # maybe more: next round, after a queue batch
                    self._counters.add("replayed", done.stored)
                    self._counters.add("rejected", done.rejected)
                    self._mark_up()
        except BaseException:
            self._spool_dirty = True
            raise
