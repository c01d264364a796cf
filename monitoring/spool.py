"""An on-disk spool: rows wait here, as JSON lines, while the database cannot take them.

Several processes (BentoML workers) share one spool folder, append concurrently, and
replay whatever they find when the database is back. The protocol, all on flock(2):

* append: open the file, take its lock, check the name still points at the open file
  (else a replayer claimed it: start again), write, fsync, unlock;
* claim: take the lock without waiting, rename the file to a ``.claimed`` name of our
  own, keep the lock while replaying, delete the file once its rows are in the database.

A crashed replayer's lock dies with it, so its ``.claimed`` file is claimed again by the
next one; replaying twice is harmless because every row carries its idempotency key.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

logger = logging.getLogger("churn.monitoring.spool")

READY_SUFFIX = ".jsonl"
CLAIMED_SUFFIX = ".claimed"
REJECTED_FOLDER = "rejected"
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
_APPEND_ATTEMPTS = 8
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def encode_rows(rows: Sequence[object]) -> bytes:
    """JSON lines (orjson handles dataclasses, datetimes and dates natively)."""
    return b"".join(orjson.dumps(row, option=_JSON_OPTIONS) + b"\n" for row in rows)


def _same_file(descriptor: int, path: Path) -> bool:
    """Whether `path` still names the file open as `descriptor` (no rename in between)."""
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (opened.st_dev, opened.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _write_all(descriptor: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        written = os.write(descriptor, view)
        view = view[written:]


def _fsync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _append_locked(path: Path, payload: bytes, wait: bool = False) -> int | None:
    """Append under the file's lock; None if it is being replayed or was just claimed.

    Returns the file's size afterwards. Without `wait`, a busy lock is not waited for (a
    replay can take seconds and appends happen on the request path): the caller writes
    to another file instead. A line left torn by a crash is terminated first, so it costs
    only itself, not the next row too.
    """
    descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        if not _same_file(descriptor, path):
            return None
        size = os.fstat(descriptor).st_size
        if size and os.pread(descriptor, 1, size - 1) != b"\n":
            payload = b"\n" + payload
        _write_all(descriptor, payload)
        os.fsync(descriptor)
        if size == 0:
            _fsync_directory(path.parent)  # a new file: make its name durable too
        return size + len(payload)
    finally:
        os.close(descriptor)


def spool_problem(directory: Path) -> OSError | None:
    """Why no file can be written in `directory` now (None: one can), by creating one.

    Tried rather than inferred from permissions: root ignores modes, while a read-only
    or full file system, or a regular file where the folder should be, stops it too.
    """
    probe = directory / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(descriptor, b"probe\n")
        finally:
            os.close(descriptor)
            probe.unlink(missing_ok=True)
    except OSError as error:
        return error
    return None


class ClaimedFile:
    """A spool file this process owns until `done()` (delete) or `release()` (keep)."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self._descriptor: int | None = descriptor
        self.corrupt: list[bytes] = []
        """Lines that were not JSON objects (torn by a crash, edited by hand)."""

    def batches(self, size: int) -> Iterator[list[dict[str, Any]]]:
        """The file's rows, `size` at a time; unreadable lines are kept in `corrupt`."""
        if self._descriptor is None:
            raise ValueError(f"{self.path}: already released")
        os.lseek(self._descriptor, 0, os.SEEK_SET)
        batch: list[dict[str, Any]] = []
        with open(self._descriptor, "rb", closefd=False) as handle:
            for line in handle:
                stripped = line.strip()
                if not stripped:
                    continue
                try:
                    row = orjson.loads(stripped)
                except orjson.JSONDecodeError:
                    row = None
                if not isinstance(row, dict):
                    self.corrupt.append(stripped)
                    continue
                batch.append(row)
                if len(batch) >= size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def done(self) -> None:
        """Every row is stored: delete the file, then let go of it."""
        if self._descriptor is not None:
            self.path.unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        """Let go without deleting: the file will be claimed and replayed again."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def __enter__(self) -> ClaimedFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()


def waiting_bytes(directory: Path, prefix: str = "predictions") -> int:
    """Bytes of `prefix` rows waiting in the spool folder for replay (ready and claimed
    files; a file that vanishes while being listed, replayed meanwhile, counts 0)."""
    total = 0
    for suffix in (READY_SUFFIX, CLAIMED_SUFFIX):
        for path in Path(directory).glob(f"{prefix}-*{suffix}"):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
    return total


class Spool:
    """One kind of row (`prefix`) in a spool folder shared by all workers."""

    def __init__(
        self,
        directory: Path,
        prefix: str = "predictions",
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        if not prefix or "." in prefix or "/" in prefix:
            raise ValueError(f"spool prefix {prefix!r}: letters, digits, '-' and '_' only")
        self.directory = Path(directory)
        self.prefix = prefix
        self.max_file_bytes = max_file_bytes
        self._active = self._new_name()
        self._lock = threading.Lock()

    def _new_name(self) -> Path:
        return self.directory / f"{self.prefix}-{os.getpid()}-{secrets.token_hex(6)}{READY_SUFFIX}"

    def append(self, rows: Sequence[object]) -> None:
        """Write rows durably (fsync) before returning. Raises OSError (disk full...)."""
        if not rows:
            return
        payload = encode_rows(rows)
        self.directory.mkdir(parents=True, exist_ok=True)
        # In-process appenders (request threads, the writer thread) take turns here, so
        # a busy flock can only mean a replayer: then move on to a fresh file.
        with self._lock:
            for _ in range(_APPEND_ATTEMPTS):
                size = _append_locked(self._active, payload)
                if size is None or size >= self.max_file_bytes:
                    self._active = self._new_name()
                if size is not None:
                    return
        raise OSError(f"{self.directory}: spool files claimed {_APPEND_ATTEMPTS} times in a row")

    def _candidates(self) -> list[Path]:
        """Ready files oldest-name first, then claimed files (maybe left by a crash)."""
        if not self.directory.is_dir():
            return []
        ready = sorted(self.directory.glob(f"{self.prefix}-*{READY_SUFFIX}"))
        claimed = sorted(self.directory.glob(f"{self.prefix}-*{CLAIMED_SUFFIX}"))
        return ready + claimed

    def has_files(self) -> bool:
        """Whether anything of this kind is waiting (cheap: one directory listing)."""
        return bool(self._candidates())

    def claim(self) -> ClaimedFile | None:
        """Take one waiting file for replay, or None. Never waits on another process."""
        for path in self._candidates():
            claimed = self._try_claim(path)
            if claimed is not None:
                return claimed
        return None

    def claim_all(self) -> Iterator[ClaimedFile]:
        """Claim the files waiting now, one at a time (each is released by the caller)."""
        for path in self._candidates():
            claimed = self._try_claim(path)
            if claimed is not None:
                yield claimed

    def _try_claim(self, path: Path) -> ClaimedFile | None:
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)  # being appended to, or replayed by a live process
            return None
        try:
            if not _same_file(descriptor, path):
                os.close(descriptor)
                return None
            base = path.name.split(".", 1)[0]
            owner = f"{os.getpid()}-{secrets.token_hex(4)}"
            target = path.with_name(f"{base}.{owner}{CLAIMED_SUFFIX}")
            os.rename(path, target)
        except BaseException:
            os.close(descriptor)
            raise
        return ClaimedFile(target, descriptor)

    def reject(self, rows: Sequence[object | bytes]) -> None:
        """Keep rows the database refused (bad data) aside: never replayed, kept to inspect."""
        if not rows:
            return
        payload = b"".join(
            (row if isinstance(row, bytes) else orjson.dumps(row, option=_JSON_OPTIONS)) + b"\n"
            for row in rows
        )
        folder = self.directory / REJECTED_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        _append_locked(folder / f"{self.prefix}{READY_SUFFIX}", payload, wait=True)
