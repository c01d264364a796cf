"""Deletion notices between the workers of one host, for the in-process caches.

Without Redis every worker keeps its own cache, so a deletion answered by one worker must
reach the others' before it answers. The deleting worker appends the customer's hash (32
bytes) to a file every worker of the host shares; each worker checks the file's size on
every cache look-up and store (one `fstat`, no read while nothing changed) and drops the
entries of any customer that appeared. A notice is visible to the other processes as soon
as `write` returns (the page cache is shared), so no fsync: after a crash the caches are
gone anyway. Replicas on other hosts do not share the file: they need Redis.

The file grows by 32 bytes per deletion; it may be removed while the service is stopped.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_NAME = "cache-deletions"
RECORD_BYTES = 32
"""One SHA-256 HMAC (the customer hash, as bytes)."""


class DeletionNotices:
    """The shared notice file, read from where this process opened it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # O_APPEND: concurrent 32-byte appends from several workers never interleave.
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        # Earlier notices concern entries this new process cannot hold.
        self._offset = os.fstat(self._fd).st_size // RECORD_BYTES * RECORD_BYTES

    def publish(self, customer_hash: str) -> None:
        """Tell every worker of the host that the customer is deleted. Raises OSError."""
        record = bytes.fromhex(customer_hash)
        if len(record) != RECORD_BYTES:
            raise ValueError(f"a customer hash is {RECORD_BYTES * 2} hex characters")
        if os.write(self._fd, record) != RECORD_BYTES:
            raise OSError(f"{self.path}: short write of a deletion notice")

    def poll(self) -> list[str] | None:
        """Customers deleted (by any worker) since the last poll, usually none, cheaply;
        None if that cannot be known (the file was truncated): forget everything."""
        size = os.fstat(self._fd).st_size
        if size < self._offset:
            self._offset = size // RECORD_BYTES * RECORD_BYTES
            return None
        whole = (size - self._offset) // RECORD_BYTES * RECORD_BYTES
        if whole == 0:
            return []
        data = os.pread(self._fd, whole, self._offset)
        self._offset += len(data) // RECORD_BYTES * RECORD_BYTES
        return [
            data[at : at + RECORD_BYTES].hex()
            for at in range(0, len(data) - RECORD_BYTES + 1, RECORD_BYTES)
        ]

    def close(self) -> None:
        os.close(self._fd)
