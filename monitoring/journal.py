"""A per-worker journal: a served prediction's row is on disk before its answer leaves.

The prediction log keeps rows in memory for up to `log_flush_ms` before inserting them; a
worker killed in that window (SIGKILL, OOM killer) would take them along. So the gateway
first appends the rows to this worker's journal (JSON lines, the spool's format) and
fdatasyncs them, then answers. Group commit keeps that cheap: the rows of every request
that arrives while one write is on disk share the next write and its fdatasync.

Each worker holds an exclusive flock(2) on its own journal files for its whole life; the
kernel drops it when the process dies, however it dies. Any live worker that can take
the lock of a journal file therefore knows its owner is dead, and adopts the file by
renaming it into the spool, whose replay puts the rows in the database (inserts are
idempotent: rows the dead worker had already written are skipped).

The writer thread trims the journal: a full segment is sealed and deleted once every row
handed to the log before the seal has left memory (written to the database or spooled).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from monitoring.records import PredictionRecord, record_row
from monitoring.spool import READY_SUFFIX, _fsync_directory, _same_file, _write_all, encode_rows

logger = logging.getLogger("churn.monitoring.journal")

JOURNAL_PREFIX = "journal"
SEGMENT_BYTES = 4 * 1024 * 1024
"""A segment is sealed (and later deleted) past this size: about 5,000 rows."""


class NotDurable(Exception):
    """Rows could not be made durable: the prediction must not be answered as logged."""


@dataclass
class _Segment:
    path: Path
    descriptor: int
    size: int = 0
    watermark: int = 0
    """Rows the log had accepted when the segment was sealed."""


class Journal:
    """This process's journal files in `directory` (thread-safe)."""

    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._sealed: list[_Segment] = []
        self._current: _Segment | None = None
        self._closed = False

    def _open_segment(self) -> _Segment:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{JOURNAL_PREFIX}-{os.getpid()}-{secrets.token_hex(6)}{READY_SUFFIX}"
        path = self.directory / name
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until we delete it
            _fsync_directory(self.directory)  # the name must survive a crash too
        except BaseException:
            os.close(descriptor)
            path.unlink(missing_ok=True)
            raise
        return _Segment(path, descriptor)

    def append(self, payload: bytes, accepted: int) -> None:
        """Write and fdatasync `payload`; raises OSError if it is not on disk.

        `accepted`: rows handed to the log so far (all earlier appends included): the
        watermark of the segment sealed here if the current one is full.
        """
        with self._lock:
            if self._closed:
                raise OSError("journal closed")
            current = self._current
            if current is not None and current.size >= self.segment_bytes:
                current.watermark = accepted
                self._sealed.append(current)
                self._current = current = None
            if current is None:
                self._current = current = self._open_segment()
            try:
                _write_all(current.descriptor, payload)
                current.size += len(payload)
                os.fdatasync(current.descriptor)
            except BaseException:
                # Maybe a torn line at its end: later rows go to a fresh segment, this
                # one is trimmed like a full one (its failed rows were never answered).
                current.watermark = accepted
                self._sealed.append(current)
                self._current = None
                raise

    def trim(self, finished: int) -> int:
        """Delete sealed segments whose rows have all left the log's memory; how many."""
        with self._lock:
            done = [s for s in self._sealed if s.watermark <= finished]
            self._sealed = [s for s in self._sealed if s.watermark > finished]
        for segment in done:
            _remove(segment)
        return len(done)

    def files(self) -> list[Path]:
        """The journal files this process holds now."""
        with self._lock:
            current = [self._current] if self._current else []
            return [s.path for s in [*self._sealed, *current]]

    def close(self, remove: bool) -> None:
        """Let go of the files; delete them if every row is stored (`remove`), else leave
        them for another worker (or the next start) to adopt."""
        with self._lock:
            self._closed = True
            segments = [*self._sealed, *([self._current] if self._current else [])]
            self._sealed, self._current = [], None
        for segment in segments:
            if remove:
                _remove(segment)
            else:
                os.close(segment.descriptor)


def _remove(segment: _Segment) -> None:
    """Unlink before unlocking, so no other worker can adopt a file being deleted."""
    segment.path.unlink(missing_ok=True)
    os.close(segment.descriptor)


def adopt_dead_journals(directory: Path, spool_prefix: str) -> int:
    """Rename journal files whose owner died into spool files of `spool_prefix`.

    A file whose lock is free has no living owner. Returns the number of files adopted.
    """
    if not directory.is_dir():
        return 0
    adopted = 0
    for path in sorted(directory.glob(f"{JOURNAL_PREFIX}-*{READY_SUFFIX}")):
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)  # its owner is alive
            continue
        try:
            if not _same_file(descriptor, path):
                continue  # adopted by another worker in between
            if os.fstat(descriptor).st_size == 0:
                path.unlink()
                continue
            base = path.name.removesuffix(READY_SUFFIX).removeprefix(JOURNAL_PREFIX)
            os.rename(path, path.with_name(f"{spool_prefix}{base}{READY_SUFFIX}"))
            _fsync_directory(directory)
            adopted += 1
            logger.warning("prediction log: adopted %s, left by a dead worker", path.name)
        finally:
            os.close(descriptor)
    return adopted


def journal_payload(records: Sequence[PredictionRecord]) -> bytes:
    """The records' rows as JSON lines, the spool's format (the spool replays them)."""
    return encode_rows([record_row(record) for record in records])


class GroupCommit:
    """Makes rows durable before their answers leave, one fdatasync per group.

    `commit(records)` returns once the records are in the journal and handed to the log
    (`handoff`, which returns the rows the log has accepted so far). While one write is
    on disk, every request that arrives joins the next one. Used from one event loop.
    """

    def __init__(
        self, journal: Journal, handoff: Callable[[Sequence[PredictionRecord]], int]
    ) -> None:
        self.journal = journal
        self._handoff = handoff
        self._waiting: list[tuple[Sequence[PredictionRecord], asyncio.Future[None]]] = []
        self._accepted = 0
        self._busy = False
        self.failure: str | None = None
        """Why the last failed write failed (at `failed_at`, monotonic seconds)."""
        self.failed_at = float("-inf")

    async def commit(self, records: Sequence[PredictionRecord]) -> None:
        """Raises NotDurable (naming the reason) if the journal could not be written."""
        if not records:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((records, done))
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().create_task(self._drain())
        await done

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                records = [record for rows, _ in group for record in rows]
                try:
                    payload = journal_payload(records)
                    await asyncio.to_thread(self.journal.append, payload, self._accepted)
                except Exception as error:
                    reason = f"journal not writable ({type(error).__name__})"
                    logger.error("prediction log: %d rows refused: %s", len(records), error)
                    self.failed_at, self.failure = time.monotonic(), reason
                    for _, done in group:
                        if not done.done():
                            done.set_exception(NotDurable(reason))
                    continue
                # The rows are on disk: hand them to the log in journal order, then answer.
                self._accepted = self._handoff(records)
                for _, done in group:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._busy = False
