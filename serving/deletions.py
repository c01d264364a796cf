"""Deletion notices between the workers of one host, for the in-process caches.

Without Redis every worker keeps its own cache, so a deletion answered by one worker must
reach the others' before it answers. The deleting worker writes the customer's hash to a
file every worker of the host shares and then bumps the notice count at the file's start;
each worker maps those first 8 bytes into memory and compares the count on every cache
look-up and store (a memory read: no system call while nothing changed), reading the new
hashes only when it moved. A notice is visible to the other processes as soon as it is
written (they share the page cache), so no fsync: after a crash the caches are gone anyway.
Replicas on other hosts do not share the file: they need Redis.

The file grows by 32 bytes per deletion; it may be removed while the service is stopped.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path

FILE_NAME = "cache-deletions"
RECORD_BYTES = 32
"""One SHA-256 HMAC (the customer hash, as bytes)."""
_COUNT = struct.Struct("<Q")
_HEADER_BYTES = 8


class DeletionNotices:
    """The shared notice file, read from the notices published after this process opened it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        with self._locked():
            if os.fstat(self._fd).st_size < _HEADER_BYTES:
                os.pwrite(self._fd, bytes(_HEADER_BYTES), 0)
        self._count = mmap.mmap(self._fd, _HEADER_BYTES)
        # Earlier notices concern entries this new process cannot hold.
        self._seen = self._published()

    def _published(self) -> int:
        return int(_COUNT.unpack_from(self._count, 0)[0])

    def _locked(self) -> _FileLock:
        return _FileLock(self._fd)

    def publish(self, customer_hash: str) -> None:
        """Tell every worker of the host that the customer is deleted. Raises OSError."""
        record = bytes.fromhex(customer_hash)
        if len(record) != RECORD_BYTES:
            raise ValueError(f"a customer hash is {RECORD_BYTES * 2} hex characters")
        with self._locked():  # one publisher at a time: the count is read, then bumped
            count = self._published()
            at = _HEADER_BYTES + count * RECORD_BYTES
            if os.pwrite(self._fd, record, at) != RECORD_BYTES:
                raise OSError(f"{self.path}: short write of a deletion notice")
            _COUNT.pack_into(self._count, 0, count + 1)  # after the record: readers see both

    def poll(self) -> list[str] | None:
        """Customers deleted (by any worker) since the last poll, usually none, cheaply;
        None if that cannot be known (the file was reset): forget everything."""
        count = self._published()
        if count == self._seen:
            return []
        if count < self._seen:
            self._seen = count
            return None
        start = _HEADER_BYTES + self._seen * RECORD_BYTES
        data = os.pread(self._fd, (count - self._seen) * RECORD_BYTES, start)
        whole = len(data) // RECORD_BYTES
        self._seen += whole
        return [data[i * RECORD_BYTES : (i + 1) * RECORD_BYTES].hex() for i in range(whole)]

    def close(self) -> None:
        self._count.close()
        os.close(self._fd)


class _FileLock:
    """flock on the notice file for a block (released by the kernel if the process dies)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *_: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
