"""Open-loop load: POST at a fixed arrival rate, latency measured from the SCHEDULED send time.

    .venv/bin/python benchmarks/open_loop.py --url http://127.0.0.1:3000/predict \\
        --bodies bodies.jsonl --rate 300 --seconds 15 [--api-key KEY]

Request i is due at ``start + i / rate`` whatever happened to the earlier ones, so a slow
server cannot slow the arrivals down (wrk and other closed-loop tools do exactly that, and
so hide the queueing: coordinated omission). Latency is completion time minus due time: it
includes any wait for a free connection and the generator's own lateness, which is also
reported (``gen lag``) so a saturated generator is visible. Requests still unanswered
``drain`` seconds after the last one was due are cancelled and count as infinitely slow in
the percentiles and as ``unfinished``.

Bodies come from a file with one compact JSON object per line, ``"customer_id"`` first (as
`side_by_side.py` writes them); each request's id gets a unique ``-TAG-<i>`` suffix so that
no two requests are identical (a cache never hits).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np

ID_FIELD = b'"customer_id":"'


@dataclass(frozen=True)
class OpenLoopResult:
    offered_rps: float
    scheduled: int
    ok: int
    errors: int  # non-2xx answers and failed connections
    unfinished: int  # still running when the drain deadline passed
    served_rps: float  # 2xx answers per second, first due time to last completion
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    lag_p99_ms: float  # how late the generator itself sent (due → actually started)


def split_bodies(lines: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
    """Each body split just before the closing quote of its customer id."""
    parts = []
    for line in lines:
        start = line.index(ID_FIELD) + len(ID_FIELD)
        end = line.index(b'"', start)
        parts.append((line[:end], line[end:]))
    return parts


def read_bodies(path: Path) -> list[tuple[bytes, bytes]]:
    return split_bodies([line for line in path.read_bytes().splitlines() if line.strip()])


def _percentile(values: np.ndarray, q: float) -> float:
    """Percentile that treats inf (unfinished) as larger than everything."""
    return float(np.percentile(values, q, method="higher")) if values.size else math.nan


async def _run(
    url: str,
    bodies: Sequence[tuple[bytes, bytes]],
    rate: float,
    seconds: float,
    api_key: str | None,
    tag: str,
    max_connections: int,
    drain_seconds: float,
) -> OpenLoopResult:
    count = max(1, int(rate * seconds))
    latencies = np.full(count, np.inf)
    lags = np.zeros(count)
    statuses = np.zeros(count, dtype=np.int32)  # 0: unfinished, -1: connection error
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["X-API-Key"] = api_key
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections)
    timeout = aiohttp.ClientTimeout(total=None)
    last_done = 0.0
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05

        async def send(i: int, due: float) -> None:
            nonlocal last_done
            lags[i] = loop.time() - due
            head, tail = bodies[i % len(bodies)]
            body = head + f"-{tag}-{i}".encode() + tail
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[i] = response.status
            except (aiohttp.ClientError, OSError):
                statuses[i] = -1
            now = loop.time()
            latencies[i] = now - due
            last_done = max(last_done, now)

        tasks = []
        for i in range(count):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(i, due)))
        _, pending = await asyncio.wait(tasks, timeout=drain_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
    latencies[statuses == 0] = np.inf  # cancelled mid-flight
    ok = int(((statuses >= 200) & (statuses < 300)).sum())
    unfinished = int((statuses == 0).sum())
    span = (last_done - start) if last_done > start else math.nan
    ms = latencies * 1000.0
    return OpenLoopResult(
        offered_rps=rate,
        scheduled=count,
        ok=ok,
        errors=count - ok - unfinished,
        unfinished=unfinished,
        served_rps=0.0 if math.isnan(span) else ok / span,
        p50_ms=_percentile(ms, 50),
        p95_ms=_percentile(ms, 95),
        p99_ms=_percentile(ms, 99),
        max_ms=float(ms.max()),
        lag_p99_ms=float(np.percentile(lags, 99) * 1000.0),
    )


def run_open_loop(
    url: str,
    bodies: Sequence[tuple[bytes, bytes]],
    rate: float,
    seconds: float,
    api_key: str | None = None,
    tag: str = "ol",
    max_connections: int = 512,
    drain_seconds: float = 30.0,
) -> OpenLoopResult:
    """Offer `rate` requests a second for `seconds`; see the module docstring."""
    work = _run(url, bodies, rate, seconds, api_key, tag, max_connections, drain_seconds)
    try:
        import uvloop  # ships with uvicorn's standard extras, which bentoml installs
    except ImportError:
        return asyncio.run(work)
    return uvloop.run(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--api-key")
    parser.add_argument("--tag", default=f"ol{int(time.time())}")
    parser.add_argument("--max-connections", type=int, default=512)
    parser.add_argument("--drain", type=float, default=30, help="seconds to wait at the end")
    args = parser.parse_args()
    result = run_open_loop(
        args.url,
        read_bodies(args.bodies),
        args.rate,
        args.seconds,
        args.api_key,
        args.tag,
        args.max_connections,
        args.drain,
    )
    print(json.dumps(result.__dict__, indent=2))


if __name__ == "__main__":
    main()
