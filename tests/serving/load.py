"""A closed-loop load for fault tests: N clients post bodies for a while, in a thread,
so the test can break something in the middle and count what the clients saw."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class LoadResult:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    cache: Counter[str] = field(default_factory=Counter)
    timeline: list[tuple[float, int, str]] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.statuses[200]

    @property
    def failed(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != 200) + sum(self.errors.values())


class Load:
    """`with Load(url, bodies, clients=32, seconds=30, headers=...) as load: ...`;
    `load.result` after the block (the block waits for the load to end)."""

    def __init__(
        self,
        url: str,
        bodies: list[dict[str, Any]],
        *,
        clients: int,
        seconds: float,
        headers: dict[str, str] | None = None,
        path: str = "/predict",
    ) -> None:
        self.url, self.bodies, self.clients, self.seconds = url, bodies, clients, seconds
        self.headers, self.path = headers or {}, path
        self.result = LoadResult()
        self.started = 0.0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=self.seconds + 120)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        deadline = time.monotonic() + self.seconds
        bodies = itertools.cycle(self.bodies)
        async with httpx.AsyncClient(
            base_url=self.url, timeout=60, limits=limits, headers=self.headers
        ) as client:

            async def one_client() -> None:
                while time.monotonic() < deadline:
                    body = next(bodies)
                    try:
                        answer = await client.post(self.path, json=body)
                    except httpx.HTTPError as error:
                        self.result.errors[type(error).__name__] += 1
                        continue
                    self.result.statuses[answer.status_code] += 1
                    self.result.cache[answer.headers.get("x-cache", "-")] += 1
                    self.result.timeline.append(
                        (self.elapsed(), answer.status_code, answer.headers.get("x-cache", "-"))
                    )

            await asyncio.gather(*(one_client() for _ in range(self.clients)))


class IdLoad:
    """`clients` closed-loop clients posting `/predict` for `seconds`, in a thread; keeps
    the X-Request-ID of every answer by status, to look each one up in the log."""

    def __init__(
        self,
        url: str,
        bodies: list[dict[str, Any]],
        clients: int,
        seconds: float,
        headers: dict[str, str],
    ) -> None:
        self.url, self.bodies, self.clients, self.seconds = url, bodies, clients, seconds
        self.headers = headers
        self.answered: dict[int, list[str]] = {}
        self.errors = 0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> IdLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=self.seconds + 120)

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.clients)
        deadline = time.monotonic() + self.seconds
        bodies = itertools.cycle(self.bodies)
        async with httpx.AsyncClient(
            base_url=self.url, timeout=60, limits=limits, headers=self.headers
        ) as client:

            async def one_client(number: int) -> None:
                for sequence in itertools.count():
                    if time.monotonic() >= deadline:
                        return
                    request_id = f"load-{number}-{sequence}"
                    try:
                        answer = await client.post(
                            "/predict", json=next(bodies), headers={"X-Request-ID": request_id}
                        )
                    except httpx.HTTPError:
                        self.errors += 1  # a connection to a killed worker or a stopped server
                        continue
                    self.answered.setdefault(answer.status_code, []).append(request_id)

            await asyncio.gather(*(one_client(n) for n in range(self.clients)))
