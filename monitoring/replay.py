"""Writing rows that may be refused, and replaying spool files into the database.

Two kinds of failure are told apart: the database is unavailable (raise: the caller
keeps the rows and retries later) or it refuses some rows as data (those rows are set
aside in the spool's rejected/ folder, so one bad row never blocks or loops forever).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DataError, DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from monitoring.spool import Spool

logger = logging.getLogger("churn.monitoring.replay")

Rows = list[dict[str, Any]]
Writer = Callable[[Connection, Rows], None]
Decoder = Callable[[Mapping[str, Any]], dict[str, Any]]


def is_outage(error: BaseException) -> bool:
    """Database unavailable (retry later) rather than rows it refuses (never retry).

    Connection, timeout and schema errors count as outages: the rows are kept.
    """
    if isinstance(error, DataError | IntegrityError):
        return False
    return isinstance(error, DBAPIError | DisconnectionError | PoolTimeoutError)


def store_rows(engine: Engine, rows: Rows, write: Writer) -> Rows:
    """Write rows in one transaction; returns the rows refused as bad data.

    Raises on an outage. If the batch is refused as data, rows are retried one by one so
    the good ones still go in.
    """
    try:
        with engine.begin() as connection:
            write(connection, rows)
        return []
    except Exception as error:
        if is_outage(error):
            raise
        if len(rows) == 1:
            return rows
    rejected = []
    for row in rows:
        try:
            with engine.begin() as connection:
                write(connection, [row])
        except Exception as error:
            if is_outage(error):
                raise
            rejected.append(row)
    return rejected


def set_aside(spool: Spool, rows: list[object]) -> int:
    """Keep refused or unreadable rows in rejected/ (never replayed); returns the count."""
    if not rows:
        return 0
    logger.warning("%s: %d rows refused or unreadable, kept in rejected/", spool.prefix, len(rows))
    try:
        spool.reject(rows)
    except OSError:
        logger.exception("%s: could not keep %d rejected rows", spool.prefix, len(rows))
    return len(rows)


@dataclass(frozen=True)
class Replayed:
    """What replaying one spool file did."""

    stored: int
    rejected: int


def replay_one(
    spool: Spool, engine: Engine, decode: Decoder, write: Writer, batch_rows: int
) -> Replayed | None:
    """Claim one spool file and write its rows; None if no file was waiting.

    The file is deleted only after all its rows are stored. On an outage this raises and
    the file is released as it was, to be claimed again (its rows are idempotent).
    """
    claimed = spool.claim()
    if claimed is None:
        return None
    stored = rejected = 0
    with claimed:
        for batch in claimed.batches(batch_rows):
            rows: Rows = []
            unreadable: list[object] = []
            for raw in batch:
                try:
                    rows.append(decode(raw))
                except (KeyError, TypeError, ValueError):
                    unreadable.append(raw)
            refused = store_rows(engine, rows, write) if rows else []
            rejected += set_aside(spool, [*unreadable, *refused])
            stored += len(rows) - len(refused)
        rejected += set_aside(spool, list(claimed.corrupt))
        claimed.done()
    return Replayed(stored, rejected)
