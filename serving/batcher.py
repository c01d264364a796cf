"""Adaptive batching of `/predict` inside the gateway, with BentoML's own dispatcher.

BentoML merges concurrent calls of a batchable API with its `CorkDispatcher`: it queues
requests while one batch is being scored and releases the queue as the next batch when the
scorer is free, at a size its latency model expects to pay off. Reached through BentoML's
HTTP stack, every request also pays for that stack's request parsing, routing and response
building (≈ 1.3 ms of CPU here, measured on a bare endpoint: BENCHMARKS.md), which is the
whole per-request budget at the throughput we want. So the gateway, which has already read
and validated the body, hands the customer straight to a `CorkDispatcher` of its own:
same algorithm, none of the per-request stack.

Batches are scored in one dedicated thread, so the event loop keeps reading, validating
and answering requests while XGBoost works (it releases the GIL).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from core.schema import CustomerData
from serving.bentoml_internals import CorkDispatcher
from serving.metrics import observe_batch_size

logger = logging.getLogger("churn.batcher")

T = TypeVar("T")

ScoreRows = Callable[[Sequence[CustomerData]], list[dict[str, Any]]]
"""Scores a batch of validated customers: one `Prediction`-shaped dict each, in order."""


class Overloaded(RuntimeError):
    """The dispatcher shed the request: it waited longer than `max_latency_ms`."""


def _shed() -> Any:
    """What a shed request's caller receives (BentoML's dispatcher calls it `fallback`)."""
    return None


class PredictBatcher:
    """`await batcher.score(customer)`: the customer's prediction, scored in a batch with
    whatever other requests arrived meanwhile (at most `max_batch_size`)."""

    def __init__(self, score_rows: ScoreRows, max_batch_size: int, max_latency_ms: int) -> None:
        self._score_rows = score_rows
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="churn-score")
        dispatcher: CorkDispatcher[CustomerData, dict[str, Any]] = CorkDispatcher(
            max_latency_in_ms=max_latency_ms,
            max_batch_size=max_batch_size,
            fallback=_shed,
            get_batch_size=lambda _: 1,
        )
        self._dispatcher = dispatcher
        self._submit = dispatcher(self._score_batch)

    async def _score_batch(self, customers: Sequence[CustomerData]) -> list[dict[str, Any]]:
        observe_batch_size(len(customers))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._score_rows, customers)

    async def score(self, customer: CustomerData) -> dict[str, Any]:
        """The prediction for one customer; raises `Overloaded` if it was shed."""
        row = await self._submit(customer)
        if row is None:
            raise Overloaded("the scoring queue is full; retry shortly")
        return row

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """Run other scoring work (a `/predict/batch` request) in the scoring thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, work, *args)

    def close(self) -> None:
        """Stop dispatching (queued requests are cancelled) and release the thread."""
        self._dispatcher.shutdown()
        self._executor.shutdown(wait=True)
