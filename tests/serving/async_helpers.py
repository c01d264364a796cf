"""Helpers shared by the async Redis-backed tests (cache, rate limit, link)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from serving.redis_link import RedisLink


def fast_link(url: str) -> RedisLink:
    return RedisLink(url, timeout_ms=200, min_backoff=0.05, max_backoff=0.2)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.05)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
