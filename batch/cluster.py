"""Where the partitions run: this process (`local`) or a Dask cluster (`dask`).

`dask` connects to the scheduler address of an existing cluster (``tcp://host:8786``:
every worker there needs this package and the same requirements installed), or, without
one, starts a `LocalCluster` of worker processes on this machine. Either way the client
process only builds the graph and shows progress; the workers read, score and write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import dask
from dask.diagnostics import ProgressBar

Engine = Literal["local", "dask"]
ENGINES: tuple[Engine, ...] = ("local", "dask")
LOCAL_CLUSTER_WORKERS = 2


@contextmanager
def dask_client(scheduler: str | None, workers: int = LOCAL_CLUSTER_WORKERS) -> Iterator[Any]:
    """A `distributed.Client` on `scheduler`, or on a LocalCluster of `workers` processes
    with one thread each (XGBoost and numpy then use one core per process)."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def compute(collections: Sequence[Any], client: Any | None, progress: bool) -> list[Any]:
    """Compute lazy `collections` together (shared partitions computed once), with a
    progress bar: in this process with `client` None, else on the client's cluster."""
    if client is None:
        with ProgressBar(minimum=1.0) if progress else _nothing():
            return list(dask.compute(*collections, scheduler="synchronous"))
    from distributed import progress as cluster_progress

    futures = client.compute(list(collections))
    if progress:
        cluster_progress(futures)
    return list(client.gather(futures))


@contextmanager
def _nothing() -> Iterator[None]:
    yield
