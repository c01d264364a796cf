"""Closed-loop load on `/predict`: throughput, latency percentiles, errors, batch sizes.

    .venv/bin/python benchmarks/serve_load.py --clients 64 --requests 4000

Starts `bentoml serve` over the store in BENTOML_HOME (default: the project's `bentos/`),
sends synthetic customers from N concurrent keep-alive clients, and reads the service's
own `churn_adaptive_batch_size` histogram afterwards. The load generator runs on
the same machine, so figures are a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from core.schema import CustomerData
from core.settings import bentoml_home
from launchers.server_process import start_server
from training.generate import generate_customers


def customer_bodies(n: int, seed: int) -> list[dict[str, Any]]:
    """Synthetic customers as `/predict` bodies (validated through the schema)."""
    frame = generate_customers(n, seed).drop(columns=["churned", "true_churn_probability"])
    bodies = []
    for record in frame.to_dict(orient="records"):
        clean = {k: v for k, v in record.items() if v is not None and v == v}
        bodies.append(json.loads(CustomerData.model_validate(clean).model_dump_json()))
    return bodies


async def run_load(url: str, bodies: list[dict[str, Any]], clients: int) -> dict[str, float]:
    latencies: list[float] = []
    statuses: list[int] = []
    next_index = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(bodies):
                body = bodies[next_index]
                next_index += 1
                started = time.perf_counter()
                try:
                    status = (await client.post("/predict", json=body)).status_code
                except httpx.HTTPError:
                    status = 0  # connection dropped: counted as an error
                latencies.append(time.perf_counter() - started)
                statuses.append(status)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "requests": len(statuses),
        "errors": sum(s != 200 for s in statuses),
        "throughput_rps": len(statuses) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def batch_sizes(metrics_text: str) -> tuple[float, float]:
    """(sum, count) of the adaptive batch-size histogram."""
    total = count = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("churn_adaptive_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("churn_adaptive_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--service", default="service:ChurnService", help="bentoml serve target")
    args = parser.parse_args()

    bodies = customer_bodies(args.requests, seed=99)
    log = Path(tempfile.mkdtemp()) / "server.log"
    server = start_server(bentoml_home(), log, service=args.service)
    try:
        asyncio.run(run_load(server.url, bodies[:200], 8))  # warm-up, trains the batcher
        print(
            f"{'clients':>7} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
            f"{'errors':>6} {'mean batch':>10}"
        )
        for clients in args.clients:
            before = batch_sizes(httpx.get(f"{server.url}/metrics").text)
            result = asyncio.run(run_load(server.url, bodies, clients))
            after = batch_sizes(httpx.get(f"{server.url}/metrics").text)
            mean_batch = (after[0] - before[0]) / max(after[1] - before[1], 1)
            print(
                f"{clients:>7} {result['throughput_rps']:>8.0f} {result['p50_ms']:>7.1f} "
                f"{result['p95_ms']:>7.1f} {result['p99_ms']:>7.1f} "
                f"{result['errors']:>6} {mean_batch:>10.1f}"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
